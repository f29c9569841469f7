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
gives it is refused.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..common.imageio import write_png
from ..data.masks import U2NetP, extract_mask
from ..dataset.sidecar import label_path, sidecar_path, write_label, write_sidecar
from ..regions.stitch import BLENDS
from ..weights.load import load_dual
from .backgrounds import IMAGE_SUFFIXES, Backgrounds, check_backgrounds, normal_images
from .options import BCM_DEFAULTS, DTYPES, DUAL_DEFAULTS, check_args, check_name, resolve_dtype
from .plan import RANDOM, check_models, check_source, make_plan, sample_group, size_of, write_region_pair
from .provenance import background_record, model_hashes
from .record import open_record, parse_shard, settings_of, shard_batches, update_pending

log = logging.getLogger(__name__)


@dataclass
class GenerateReport:
    """What one ``generate`` call did; ``written``/``skipped``/``redone`` count pairs."""

    folder: Path
    written: int = 0
    skipped: int = 0
    redone: int = 0
    empty_masks: int = 0
    indices: list[int] = field(default_factory=list)


def pair_paths(folder: Path, anomaly: str, index: int) -> tuple[Path, Path, Path]:
    """(whole image, mask, anomaly part) of pair ``index`` under ``<out>/<category>``."""
    name = f"{index:03d}"
    return (
        folder / "test" / anomaly / f"{name}.png",
        folder / "ground_truth" / anomaly / f"{name}_mask.png",
        folder / "anomaly_part" / anomaly / f"{name}.png",
    )


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
    """
    check_args(count, batch_size, size, scheduler, mask_method, threshold, background_every, context=context,
               working=working, region_size=region_size)  # fmt: skip
    shard = parse_shard(shard)
    if device is None:
        import torch

        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    dtype_name = resolve_dtype(dtype, device)
    folder = Path(out_dir) / check_name(category, "category")
    check_name(anomaly, "anomaly")
    several = [Path(w) for w in weights_path] if isinstance(weights_path, (list, tuple)) else [Path(weights_path)]
    base_path, weights_path = Path(base_path), several[0]
    if not base_path.exists():
        raise FileNotFoundError(f"base model not found: {base_path}")
    dual = load_dual(weights_path)
    more = [load_dual(w) for w in several[1:]]  # a defect type per model: defect k uses model k % n
    files = None
    if normal_dir is not None:
        if not dual.config.bcm:
            raise ValueError(f"normal_dir given, but {weights_path} was trained without BCM; drop --normal-dir")
        files = normal_images(Path(normal_dir), category)
        check_backgrounds(files, range(count), background_every)
    elif dual.config.bcm:
        log.warning("%s has BCM but no normal_dir was given: generating without background compensation", weights_path)
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {', '.join(BLENDS)}, got {blend!r}")
    working = size if working is None else working
    plan = make_plan(source, region, seed, region_size, context, working, feather, blend, defects, region_ids)
    if more:
        check_models(several, [dual, *more], plan, files is not None)
    default_steps, default_cfg = BCM_DEFAULTS if files else DUAL_DEFAULTS
    steps = default_steps if steps is None else steps
    cfg = default_cfg if cfg is None else float(cfg)
    settings = settings_of(
        base_path, weights_path, dual, seed=seed, steps=steps, cfg=cfg, scheduler=scheduler, size=size,
        mask_method=mask_method, threshold=threshold, background_every=background_every,
        normal_dir=str(Path(normal_dir).resolve()) if normal_dir is not None else None,
        source=str(Path(source).resolve()) if source else None,
        region=(RANDOM if str(region) == RANDOM else str(Path(region).resolve())) if region else None,
        feather=feather, region_size=list(region_size), dtype=dtype_name,
        **({"context": context, "working": working, "blend": blend, "defects": plan.defects, "region_ids": region_ids}
           if plan else dict.fromkeys(("context", "working", "blend", "defects", "region_ids"))),
    )  # fmt: skip
    if more:  # one file keeps the record's old form
        settings.update(weights=plan.models, prompts=[list(d.prompts) for d in (dual, *more)])
    record, owed = open_record(folder, anomaly, settings, force)

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
    if owing:  # listed before the models load: a run stopped from here on leaves them pending, never "done"
        update_pending(record, settings, add=owing)
    if not todo:
        return report

    from ..common.precision import torch_dtype
    from ..sd15.load import load_sd15
    from ..sd15.pipeline import DualAnoDiffPipeline

    pipe = [DualAnoDiffPipeline.from_sd15(load_sd15(base_path, dtype=torch_dtype(dtype_name)), d, device=device)
            for d in (dual, *more)]
    u2net = U2NetP() if (mask_method == "u2netp" or files) else None
    backgrounds = Backgrounds(files, size, background_every, u2net) if files else None
    if plan is not None and u2net is not None:
        plan.source.saliency = u2net

    def finish(indices: list[int], futures: list[Future]) -> None:
        for i, done in zip(indices, futures):
            empty = done.result()
            report.written += 1
            report.empty_masks += int(empty)
            report.indices.append(i)
        update_pending(record, settings, done=set(indices))
        bar.update(len(indices))

    with (
        tqdm(total=len(todo), desc=f"{category}/{anomaly}", unit="pair", disable=not progress) as bar,
        ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="anodiff-write") as pool,
    ):
        writing: deque[tuple[list[int], list[Future]]] = deque()
        meta = {"model": settings["weights"], "base": settings["base"], "prompts": settings["prompts"], "steps": steps,
                "cfg": cfg, "sampler": scheduler, "dtype": dtype_name, "category": category, "anomaly": anomaly,
                "run_seed": seed, "batch_size": batch_size, "mask_method": mask_method, "threshold": threshold,
                "weights_files": [str(w.resolve()) for w in several],
                "hashes": model_hashes(base_path, several, u2net is not None or bool(plan and plan.fixed is None)),
                **{k: settings[k] for k in ("feather", "blend", "context", "working")}}  # fmt: skip
        if plan is None:
            meta["feather"] = None  # without regions nothing is feathered
        for group in shard_batches(todo, batch_size, shard):
            if plan is not None:
                works = sample_group(pipe, plan, group, seed, steps=steps, cfg=cfg, scheduler=scheduler,
                                     background_for=backgrounds.for_window if backgrounds else None)  # fmt: skip
                futures = [
                    pool.submit(write_region_pair, pair_paths(folder, anomaly, w.pair),
                                label_path(folder, anomaly, w.pair), sidecar_path(folder, anomaly, w.pair), w, plan,
                                mask_method, threshold, u2net,
                                {**meta, "pair": w.pair, "seed": seed + w.pair, "group": group,
                                 "background": background_record(backgrounds, w.pair, size_of(w.image))})
                    for w in works
                ]  # fmt: skip
                writing.append((group, futures))
                while len(writing) > 1:
                    finish(*writing.popleft())
                continue
            batch = pipe[0](
                len(group), size, size, steps=steps, cfg=cfg, scheduler=scheduler, seed=[seed + i for i in group],
                backgrounds=[backgrounds.for_pair(i) for i in group] if backgrounds else None, progress=False,
            )  # fmt: skip
            futures = [
                pool.submit(_write_pair, folder, anomaly, i, image, part, mask_method, threshold, u2net,
                            {**meta, "pair": i, "seed": seed + i, "source": None, "size": [size, size], "group": group,
                             "background": background_record(backgrounds, i, [size, size])})
                for i, image, part in zip(group, batch.images, batch.anomaly_parts)
            ]  # fmt: skip
            writing.append((group, futures))
            while len(writing) > 1:  # the GPU samples batch b while batch b - 1 is written
                finish(*writing.popleft())
        while writing:
            finish(*writing.popleft())
    return report


def _write_pair(folder, anomaly, i, image, part, mask_method, threshold, u2net, meta) -> bool:
    """Mask, sidecar and the three PNGs of pair ``i`` (on a worker thread), after removing a label mask an earlier
    multi-defect run left (export would take it for this pair's defects); True when the mask is empty."""
    mask = extract_mask(part, mask_method, threshold, model=u2net)
    write_sidecar(sidecar_path(folder, anomaly, i), meta)
    write_label(label_path(folder, anomaly, i), None)
    image_path, mask_path, part_path = pair_paths(folder, anomaly, i)
    write_png(image_path, image)
    write_png(part_path, part)
    write_png(mask_path, mask.astype(np.uint8) * 255)
    return not mask.any()


__all__ = [
    "BCM_DEFAULTS", "DTYPES", "DUAL_DEFAULTS", "IMAGE_SUFFIXES", "Backgrounds", "GenerateReport", "generate",
    "normal_images", "pair_paths", "parse_shard", "resolve_dtype", "shard_batches",
]  # fmt: skip
