"""``anodiff train --all --ray``: one Ray task per (category, defect type), one GPU each, retried when it dies.

A task that starts on a job whose attempt marker (``.ray-attempt`` in the job's folder) is already there is a
retry (its worker or node died) or a re-run after the driver stopped: it continues from the job's newest
checkpoint with the trainer's exact resume, so the final weights equal an uninterrupted run. Finished jobs (their
final file exists, without ``--force``) are skipped on the driver; errors in the data are not retried. The
driver prints one row per job and returns 0, 1 (a job failed) or 130 (interrupted: run the same command again).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

MARKER = ".ray-attempt"
RETRIES = 3


@dataclass
class JobRow:
    category: str
    anomaly: str
    status: str
    path: str = ""


def run_job(config: Any, train_fn: Callable[[Any], Path] | None = None) -> str:
    """The body of one task: resume when an earlier attempt of this job started (``MARKER``), train, clear it."""
    if train_fn is None:
        from ..train.trainer import train as train_fn
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    marker = out / MARKER
    if marker.exists():
        config = replace(config, resume=True)
    marker.touch()
    final = train_fn(config)
    marker.unlink(missing_ok=True)
    return str(final)


def _failure(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None) or exc
    first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return f"failed: {first}"


def train_all_on_ray(
    ray: Any, configs: list[Any], *, device: str, retries: int = RETRIES, train_fn: Callable | None = None
) -> tuple[list[JobRow], bool]:
    """Submit every unfinished job of ``configs`` (``TrainConfig`` with category/anomaly/output set) and wait;
    returns the rows and whether the driver was interrupted (the running tasks are then cancelled)."""
    from ray.exceptions import RayError

    rows, refs = [], {}
    gpu = device.startswith("cuda")
    task = ray.remote(run_job).options(
        num_gpus=1 if gpu else 0, num_cpus=1, max_retries=retries, retry_exceptions=False
    )
    for config in configs:
        final = Path(config.output) / f"{config.model_name}.safetensors"
        if final.exists() and not config.force:
            rows.append(JobRow(config.category, config.anomaly, "skipped (done)", str(final)))
            continue
        row = JobRow(config.category, config.anomaly, "submitted")
        rows.append(row)
        refs[task.remote(config, train_fn)] = row
    try:
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            row = refs[ready[0]]
            try:
                row.path, row.status = ray.get(ready[0]), "trained"
            except RayError as exc:
                row.status = _failure(exc)
    except KeyboardInterrupt:
        for ref, row in refs.items():
            if row.status == "submitted":
                ray.cancel(ref, force=True)
                row.status = "interrupted"
        return rows, True
    return rows, False
