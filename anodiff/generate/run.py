"""``anodiff generate``: a synthetic MVTec-style anomaly set (image, mask, anomaly part) from one weight file.

Layout, under ``<out>/<category>/``::

    test/<anomaly>/000.png                whole anomaly image
    ground_truth/<anomaly>/000_mask.png   mask, 0/255, from the anomaly part (dualanodiff-reference.md §8)
    anomaly_part/<anomaly>/000.png        the anomaly branch: the defect on mid-grey
    meta/<anomaly>/000.json               the pair's sidecar: source photo, regions, models, seed and all else that
                                          makes it again (dataset.sidecar, generate.provenance; --from-sidecar)
    labels/<anomaly>/000.png              with several defects: label mask, id k + 1 for defect k (removed
                                          when the pair is rewritten with one defect)
    .anodiff-generate-<anomaly>.json      the settings the pairs were made with

Resuming: pair ``i`` (seed ``seed + i``) is skipped when its three files exist, and generated again (with a
warning) when only some do or the settings file lists it as pending; every file is written to a temporary
name and renamed, so none is ever half written. Dataset scale: ``shard=(k, n)`` (or torchrun/accelerate
launch's RANK and WORLD_SIZE) takes batches ``b`` with ``b % n == k`` of the fixed batches
``[b * batch_size, (b + 1) * batch_size)``, so every pair is computed in the same batch as in one process and
the shards' union is byte-identical to a single run; the settings file is read and updated under a short lock,
so concurrent shards never clobber each other's pending pairs. Masks and PNGs are written by a thread pool
while the next batch samples. Existing pairs are only resumed when the settings file matches the current
settings; folders that hold files this command did not write, or pairs made with other settings, are an error
unless ``force``, which regenerates pairs ``0 .. count-1`` over them and marks any older pair above them
pending. Nothing is deleted but the label mask of a pair rewritten with one defect. The sidecar is written
before the PNGs, so a complete pair has one; a kept pair whose sidecar names another photo than ``--source`` now
gives it is refused. Across machines the same job runs on Ray (``runner``; ``anodiff.scale.generate``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from ..dataset.sidecar import sidecar_path
from .backgrounds import IMAGE_SUFFIXES, Backgrounds, normal_images
from .job import GenerateJob, GenerateReport, PipelineFactory, pair_paths, run_local
from .options import BCM_DEFAULTS, DTYPES, DUAL_DEFAULTS, resolve_dtype
from .plan import RANDOM, check_source
from .provenance import model_hashes
from .record import open_record, parse_shard, settings_of, shard_batches, update_pending
from .request import GenerateRequest, Prepared, prepare

log = logging.getLogger(__name__)

Runner = Callable[[GenerateJob, GenerateReport], GenerateReport]
"""What runs a job's pairs once ``generate`` has checked everything: ``run_local`` (default), or
``anodiff.scale.generate.ray_runner(...)`` for ``--ray``."""


def generate(
    base_path: str | os.PathLike,
    weights_path: str | os.PathLike | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    count: int,
    category: str = "object",
    anomaly: str = "defect",
    batch_size: int = 4,
    seed: int = 0,
    steps: int | None = None,
    cfg: float | None = None,
    scheduler: str = "pndm",
    size: int = 512,
    mask_method: str = "u2netp",
    threshold: float = 0.5,
    normal_dir: str | os.PathLike | None = None,
    background_every: int = 50,
    force: bool = False,
    device: str | None = None,
    progress: bool = True,
    source: str | os.PathLike | None = None,
    region: str | os.PathLike | None = None,
    feather: int = 4,
    region_size: tuple[float, float] = (0.05, 0.2),
    dtype: str = "auto",
    shard: str | tuple[int, int] | None = None,
    workers: int = 2,
    context: float = 2.0,
    working: int | None = None,
    defects: int = 1,
    blend: str = "feather",
    region_ids: bool = False,
    runner: Runner | None = None,
) -> GenerateReport:
    """Generate pairs ``0 .. count-1`` into an MVTec-style tree (module docstring), resuming where files exist.

    steps/cfg default to the authors' settings: 100 / 2.5, or 50 / 2.0 with ``normal_dir`` (BCM backgrounds).
    source + region (image files): region control; the defect only inside the region, the photo elsewhere, the
    mask clipped to the region. region="random": pair i gets its own region on the photo's object (U²-Net-P),
    sampled from seed + i with sides in ``region_size`` (fractions of the image side); a batch holds a
    different region in each pair.
    dtype: the UNet's dtype (``auto``: fp16 on CUDA, else fp32; the VAE always decodes in fp32). shard: ``"k/n"``
    or ``(k, n)``, default from RANK/WORLD_SIZE (module docstring). workers: threads for masks and PNG writes.
    Region control works on each photo at its own size (``anodiff.generate.plan``): source may be a folder (pair i
    takes photo i % n), each defect is made in a crop window of ``context`` times its region at the ``working``
    size (default ``size``) and stitched back (``blend``: feather or poisson); ``defects`` random regions per pair,
    or one per id of a label image (``region_ids``). Every pair gets a sidecar (``anodiff.dataset.sidecar``).
    runner: what samples and writes the pairs still owed (default ``run_local``; ``--ray``: a Ray runner).
    """
    request = GenerateRequest(**locals())  # first statement: exactly the arguments above
    ready = prepare(request)
    settings = _settings(request, ready)
    record, owed = open_record(ready.folder, anomaly, settings, force)
    report, todo = _todo(
        ready.folder, anomaly, count, batch_size, ready.shard, owed, force, ready.plan, record, settings
    )
    if not todo:
        return report
    job = _job(request, ready, record, settings, todo)
    if runner is not None:
        return runner(job, report)
    return run_local(job, report, progress=progress, workers=workers)


def _settings(request: GenerateRequest, ready: Prepared) -> dict:
    """What the settings record holds: the pairs are resumed only while these stay the same."""
    r, plan = request, ready.plan
    settings = settings_of(
        ready.base_path,
        ready.several[0],
        ready.dual,
        seed=r.seed,
        steps=ready.steps,
        cfg=ready.cfg,
        scheduler=r.scheduler,
        size=r.size,
        mask_method=r.mask_method,
        threshold=r.threshold,
        background_every=r.background_every,
        normal_dir=str(Path(r.normal_dir).resolve()) if r.normal_dir is not None else None,
        source=str(Path(r.source).resolve()) if r.source else None,
        region=(RANDOM if str(r.region) == RANDOM else str(Path(r.region).resolve())) if r.region else None,
        feather=r.feather,
        region_size=list(r.region_size),
        dtype=ready.dtype_name,
        **(
            {
                "context": r.context,
                "working": ready.working,
                "blend": r.blend,
                "defects": plan.defects,
                "region_ids": r.region_ids,
            }
            if plan
            else dict.fromkeys(("context", "working", "blend", "defects", "region_ids"))
        ),
    )
    if ready.more:  # one file keeps the record's old form
        settings.update(weights=plan.models, prompts=[list(d.prompts) for d in (ready.dual, *ready.more)])
    return settings


def _job(request: GenerateRequest, ready: Prepared, record: Path, settings: dict, todo: list[int]) -> GenerateJob:
    """The job ``run_local`` or a Ray runner carries out, with the provenance every sidecar records."""
    r, plan, files = request, ready.plan, ready.files
    saliency = r.mask_method == "u2netp" or bool(files) or bool(plan and plan.fixed is None)
    meta = {
        "model": settings["weights"],
        "base": settings["base"],
        "prompts": settings["prompts"],
        "steps": ready.steps,
        "cfg": ready.cfg,
        "sampler": r.scheduler,
        "dtype": ready.dtype_name,
        "category": r.category,
        "anomaly": r.anomaly,
        "run_seed": r.seed,
        "batch_size": r.batch_size,
        "mask_method": r.mask_method,
        "threshold": r.threshold,
        "weights_files": [str(w.resolve()) for w in ready.several],
        "hashes": model_hashes(ready.base_path, ready.several, saliency),
        **{k: settings[k] for k in ("feather", "blend", "context", "working")},
    }
    if plan is None:
        meta["feather"] = None  # without regions nothing is feathered
    factory = PipelineFactory(ready.base_path, tuple(ready.several), ready.device, ready.dtype_name)
    return GenerateJob(
        ready.folder,
        r.anomaly,
        r.category,
        record,
        settings,
        todo,
        r.batch_size,
        ready.shard,
        factory,
        r.seed,
        ready.steps,
        ready.cfg,
        r.scheduler,
        r.size,
        r.mask_method,
        r.threshold,
        plan,
        files,
        r.background_every,
        meta,
    )


def _todo(
    folder, anomaly, count, batch_size, shard, owed, force, plan, record, settings
) -> tuple[GenerateReport, list]:
    """The pairs of this shard still to make (skipping complete ones, warning about half-made ones), listed as
    pending in the record before any model loads: a run stopped from here on leaves them pending, never done."""
    report = GenerateReport(folder)
    todo = []
    mine = {i for batch in shard_batches(list(range(count)) + sorted(owed), batch_size, shard) for i in batch}
    for i in range(count):
        if i not in mine:
            continue
        present = sum(p.is_file() for p in pair_paths(folder, anomaly, i))
        if present == 3 and not force and i not in owed:
            check_source(sidecar_path(folder, anomaly, i), plan, i)
            report.skipped += 1
            continue
        if present and not force:
            log.warning("pair %d was left unfinished (%d of 3 files): generating it again", i, present)
            report.redone += 1
        todo.append(i)
    owing = set(todo) | {i for i in owed if i in mine}
    if owing:
        update_pending(record, settings, add=owing)
    return report, todo


__all__ = [
    "BCM_DEFAULTS",
    "DTYPES",
    "DUAL_DEFAULTS",
    "IMAGE_SUFFIXES",
    "Backgrounds",
    "GenerateJob",
    "GenerateReport",
    "Runner",
    "generate",
    "normal_images",
    "pair_paths",
    "parse_shard",
    "resolve_dtype",
    "shard_batches",
]
