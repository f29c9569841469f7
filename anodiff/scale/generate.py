"""``anodiff generate --ray``: the pair plan as a Ray dataset, sampled by pipeline actors, written by CPU actors.

The entry point is ``run_on_ray(job, report, factory=..., replicas=..., device=...)``. ``job`` is any object with
the steps of ``anodiff.generate.job.GenerateJob``:

- ``batches()``: the fixed batches of pair indices (the plan; one dataset row each, so every pair is sampled
  with the same batch mates as in one process and the files are the same bytes);
- ``sample(model, group, saliency)``: a batch's items, on an actor that built ``model = factory()`` once;
- ``write(item, saliency)`` and ``pair_of(item)``: one pair's files (each atomic), on a CPU writer actor;
- ``done(indices)``: on the driver, after a batch's files are all written (the resume record);
- ``needs_saliency`` / ``load_saliency()``: U²-Net-P per actor when masks or backgrounds need it.

``factory`` is a picklable zero-argument callable (default ``job.factory``, a ``PipelineFactory``), so another
mode (the training-free graft mode) plugs in its own job and model factory and gets the same actors, retries and
resume. A killed actor is restarted by Ray Data and its batch sampled again (the same seeds, so the same bytes,
written over any file of the dead attempt by atomic rename); an interrupted driver leaves the unfinished pairs
pending in the record, so the next run makes them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from ..generate.job import GenerateReport

log = logging.getLogger(__name__)


def _objects(values: list[Any]) -> np.ndarray:
    """A 1-D object array of ``values`` (numpy would otherwise stack tuples of arrays into one array)."""
    out = np.empty(len(values), dtype=object)
    for k, value in enumerate(values):
        out[k] = value
    return out


class _Sampler:
    """A replica: builds the pipelines once, then samples one batch per call."""

    def __init__(self, job: Any, factory: Callable[[], Any]) -> None:
        self.job = job
        self.saliency = job.load_saliency() if job.needs_saliency else None
        self.model = factory()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = []
        for group in batch["group"]:
            items.extend(self.job.sample(self.model, [int(i) for i in group], self.saliency))
        return {"item": _objects(items), "batch": np.full(len(items), int(batch["batch"][0]))}


class _Writer:
    """CPU work off the sampling actors: masks (U²-Net-P loaded once per writer), sidecars and PNGs."""

    def __init__(self, job: Any) -> None:
        self.job = job
        self.saliency = job.load_saliency() if job.needs_saliency else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pairs = [self.job.pair_of(item) for item in batch["item"]]
        empty = [bool(self.job.write(item, self.saliency)) for item in batch["item"]]
        return {"pair": np.array(pairs, np.int64), "empty": np.array(empty), "batch": batch["batch"]}


def run_on_ray(
    job: Any,
    report: GenerateReport,
    *,
    factory: Callable[[], Any] | None = None,
    replicas: int = 1,
    device: str = "cpu",
    writers: int = 1,
    cpus_per_replica: float = 1.0,
    progress: bool = True,
) -> GenerateReport:
    """Sample ``job.batches()`` on ``replicas`` actors (one GPU each on ``cuda``, else ``cpus_per_replica`` CPUs)
    and write them on ``writers`` CPU actors; ``job.done`` is called per finished batch on the driver."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = progress
    context.print_on_execution_start = False
    batches = job.batches()
    rows = [{"batch": b, "group": list(group)} for b, group in enumerate(batches)]
    gpu = device.startswith("cuda")
    sampled = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
        _Sampler,
        fn_constructor_args=(job, factory or job.factory),
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=replicas),
        num_gpus=1 if gpu else 0,
        num_cpus=1 if gpu else cpus_per_replica,
    )
    written = sampled.map_batches(
        _Writer,
        fn_constructor_args=(job,),
        batch_size=None,
        compute=ray.data.ActorPoolStrategy(size=writers),
        num_cpus=0.5,
    )
    sizes = {b: len(group) for b, group in enumerate(batches)}
    finished: dict[int, list[int]] = {}
    for out in written.iter_batches(batch_size=None, batch_format="numpy"):
        for pair, empty, b in zip(out["pair"], out["empty"], out["batch"]):
            report.written += 1
            report.empty_masks += int(empty)
            report.indices.append(int(pair))
            finished.setdefault(int(b), []).append(int(pair))
            if len(finished[int(b)]) == sizes[int(b)]:
                job.done(finished.pop(int(b)))
    report.indices.sort()
    return report


def ray_runner(**options: Any) -> Callable[[Any, GenerateReport], GenerateReport]:
    """``run_on_ray`` with ``options`` bound: the ``runner`` ``anodiff.generate.run.generate`` takes."""
    return functools.partial(run_on_ray, **options)
