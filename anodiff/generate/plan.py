"""Region control for ``anodiff generate``: which photo and regions each pair gets, and sampling a batch of pairs
with crop-and-stitch, one defect after another.

Pair ``i`` takes photo ``i % n`` of ``--source`` (a file or a folder) at its own size, and its regions from
``--region`` (a mask file, resized to each photo; with ``--region-ids`` a label image, one region per id) or
random ones on that photo's own object (``--region random --defects K``). Every defect is generated in its own
crop window at the working size (pairs whose windows share a working size share a UNet call) and stitched back at
full resolution before the next defect is cut out. Defect 0 of pair i uses seed ``seed + i``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..regions.inputs import region_mask
from ..regions.stitch import Window, crop, crop_window, region_box, stitch, stitch_mask
from .provenance import file_sha256, region_record
from .sources import PhotoSource

RANDOM = "random"


def defect_seed(seed: int, pair: int, defect: int) -> int:
    """``seed + pair`` for a pair's first defect (as without regions); a derived 31-bit seed for the others."""
    if defect == 0:
        return seed + pair
    return int(np.random.SeedSequence([seed + pair, defect]).generate_state(1)[0]) & 0x7FFFFFFF


@dataclass
class RegionPlan:
    """Where pair ``i``'s defects go (``regions_for``) and how they are cut out and pasted back."""

    source: PhotoSource
    fixed: list[np.ndarray] | None
    defects: int
    seed: int
    size_range: tuple[float, float]
    context: float
    working: int
    feather: int
    blend: str
    models: list[str] = field(default_factory=list)
    """With several weight files: defect k comes from ``models[k % n]``, of defect type ``types[k % n]``."""
    types: list[str] = field(default_factory=list)

    def regions_for(self, pair: int) -> list[np.ndarray]:
        photo = self.source.photo(pair)
        if self.fixed is None:
            from ..regions.multi_defect import sample_disjoint

            return sample_disjoint(
                self.source.foreground(pair), self.defects, self.size_range, (self.seed, pair), feather=self.feather
            )
        zones = [region_mask(r, *photo.shape[:2]) for r in self.fixed]
        for k, zone in enumerate(zones):
            if not zone.any():
                raise ValueError(
                    f"region {k + 1} vanished when resized to {self.source.name_for(pair)} "
                    f"({photo.shape[1]}x{photo.shape[0]}); draw it larger"
                )
        return zones


def make_plan(
    source: str | os.PathLike | None,
    region: str | os.PathLike | None,
    seed: int,
    size_range: Sequence[float],
    context: float,
    working: int,
    feather: int,
    blend: str,
    defects: int = 1,
    region_ids: bool = False,
) -> RegionPlan | None:
    """The plan for ``generate``'s region options, or None without region control; bad options name the flag."""
    from ..regions.multi_defect import check_disjoint, regions_from_labels

    if source is None and region is None:
        return None
    if source is None or region is None:
        raise ValueError(
            "region control needs both --source (a normal photo or folder) and --region (a mask image or 'random')"
        )
    if isinstance(defects, bool) or not isinstance(defects, int) or defects < 1:
        raise ValueError(f"--defects must be an integer >= 1, got {defects!r}")
    photos = PhotoSource(source)
    if str(region) == RANDOM:
        return RegionPlan(photos, None, defects, seed, tuple(size_range), context, working, feather, blend)
    if defects != 1:
        raise ValueError(
            "--defects applies to --region random; for fixed regions draw them in a label image (--region-ids)"
        )
    from ..common.imageio import read_label
    from ..common.mask_rule import read_binary_mask

    if region_ids:
        raw = read_label(region, f"--region {region}")
        fixed = [r.astype(np.float32) for r in regions_from_labels(raw, f"--region {region}")]
        check_disjoint(fixed, feather)
    else:
        mask = read_binary_mask(region)
        if not mask.any():
            raise ValueError(f"{region}: the region mask is empty; paint where the defect may go in white")
        fixed = [mask.astype(np.float32)]
    return RegionPlan(photos, fixed, len(fixed), seed, tuple(size_range), context, working, feather, blend)


@dataclass
class PairWork:
    """One pair while its defects are generated: the photo so far (full size) and per defect its inputs/outputs."""

    pair: int
    image: np.ndarray
    regions: list[np.ndarray]
    windows: list[Window] = field(default_factory=list)
    parts: list[np.ndarray] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)


def sample_group(
    pipe: Any | Sequence[Any],
    plan: RegionPlan,
    group: list[int],
    seed: int,
    background_for: Callable[[int, np.ndarray, Window], np.ndarray] | None = None,
    **kwargs: Any,
) -> list[PairWork]:
    """The defects of the pairs ``group``: defect k of every pair, then k + 1 on the stitched photos; pairs whose
    windows share a working size share a call, in the group's order (so a shard gets the same result).
    background_for: (pair, region, crop window) -> the BCM background windowed like the photo, or None.
    pipe: one pipeline, or one per model (defect k uses k % n)."""
    pipes = list(pipe) if isinstance(pipe, (list, tuple)) else [pipe]
    works = [PairWork(i, plan.source.photo(i), plan.regions_for(i)) for i in group]
    for k in range(max(len(w.regions) for w in works)):
        active = [w for w in works if k < len(w.regions)]
        crops = {}
        for w in active:
            window = crop_window(w.regions[k], plan.context, plan.working, name=f"pair {w.pair}, defect {k + 1}")
            crops[w.pair] = (window, *crop(w.image, w.regions[k], window))
        for shape in dict.fromkeys(crops[w.pair][0].work_shape for w in active):
            sub = [w for w in active if crops[w.pair][0].work_shape == shape]
            seeds = [defect_seed(seed, w.pair, k) for w in sub]
            batch = pipes[k % len(pipes)](
                len(sub),
                shape[0],
                shape[1],
                seed=seeds,
                source=[crops[w.pair][1] for w in sub],
                region=[crops[w.pair][2] for w in sub],
                feather=None,
                progress=False,
                backgrounds=[background_for(w.pair, w.regions[k], crops[w.pair][0]) for w in sub]
                if background_for
                else None,
                **kwargs,
            )
            for j, w in enumerate(sub):
                window = crops[w.pair][0]
                w.image = stitch(
                    w.image, batch.images[j], w.regions[k], window, feather=plan.feather, blend=plan.blend
                )[0]
                w.windows.append(window)
                w.parts.append(batch.anomaly_parts[j])
                w.seeds.append(seeds[j])
    return works


def finish_pair(
    work: PairWork, plan: RegionPlan, mask_method: str, threshold: float, model: Any = None
) -> tuple[np.ndarray, list[np.ndarray], list[dict]]:
    """(full-size anomaly part on grey, per-defect full-size masks, sidecar entries): the masks come from each
    defect's anomaly part at the working size, put back in its window and clipped to its region."""
    from ..data.masks import extract_mask

    part = np.full((*work.image.shape[:2], 3), 0.5, np.float32)  # the anomaly part stays RGB on mid-grey
    masks, entries = [], []
    for k, (zone, window, piece) in enumerate(zip(work.regions, work.windows, work.parts)):
        part = stitch(part, piece, zone, window, feather=plan.feather)[0]
        masks.append(stitch_mask(extract_mask(piece, mask_method, threshold, model=model), zone, window))
        entries.append(
            {
                "id": k + 1,
                "seed": work.seeds[k],
                "box": list(region_box(zone)),
                "window": window.to_dict(),
                "mask_pixels": int(masks[-1].sum()),
                "region": region_record(zone),
            }
        )
        if plan.models:
            entries[-1].update(model=plan.models[k % len(plan.models)], type=plan.types[k % len(plan.types)])
    return part, masks, entries


def write_region_pair(
    paths: tuple[Path, Path, Path],
    label_file: Path,
    sidecar_file: Path,
    work: PairWork,
    plan: RegionPlan,
    mask_method: str,
    threshold: float,
    model: Any,
    meta: dict,
) -> bool:
    """On a writer thread: masks, then the sidecar, then the PNGs (the label mask with several defects, else an
    old label removed; image, mask, part), each atomic, so three PNGs on disk mean the sidecar is there too. True
    when the mask is empty."""
    from ..common.imageio import write_png
    from ..dataset.sidecar import write_label, write_sidecar
    from ..regions.multi_defect import label_mask

    part, masks, entries = finish_pair(work, plan, mask_method, threshold, model)
    label = label_mask(masks)
    source = plan.source
    if plan.types:
        meta = {**meta, "defect_types": [e["type"] for e in entries]}  # export: one COCO category per defect type
    if meta.get("background"):  # BCM: the background is cut out with each defect's own window
        entries = [{**e, "background_window": e["window"]} for e in entries]
    size = size_of(work.image)
    where = {
        "source": source.name_for(work.pair),
        "source_root": str(source.root.resolve()),
        "source_sha256": file_sha256(source.file_for(work.pair)),
    }
    write_sidecar(sidecar_file, {**meta, **where, "size": size, "defects": entries})
    image_path, mask_path, part_path = paths
    write_label(label_file, label if len(masks) > 1 else None)
    write_png(image_path, work.image)
    write_png(part_path, part)
    write_png(mask_path, (label > 0).astype(np.uint8) * 255)
    return not label.any()


def size_of(image: np.ndarray) -> list[int]:
    """``[width, height]`` of an image, as sidecars record sizes."""
    return [int(image.shape[1]), int(image.shape[0])]


def check_models(files: list[Path], duals: list[Any], plan: RegionPlan | None, bcm: bool) -> None:
    """Several weight files: defect k of every image comes from file k % n, named by the file's stem."""
    if plan is None:
        raise ValueError("several --weights need region control (--source and --region): defect k uses weights k % n")
    if plan.defects < len(files):
        raise ValueError(
            f"{len(files)} --weights but {plan.defects} defect(s) per image; raise --defects so each "
            "model draws at least one"
        )
    if bcm and not all(d.config.bcm for d in duals):
        raise ValueError("normal_dir given, but not every --weights file was trained with BCM")
    plan.models = [str(f.resolve()) for f in files]
    plan.types = [f.stem for f in files]


def check_source(path: Path, plan: RegionPlan | None, pair: int) -> None:
    """A kept pair must still get its photo: a folder whose listing changed would mix photos on resume."""
    from ..dataset.sidecar import read_sidecar

    record = read_sidecar(path) if plan is not None else None
    if record is not None and record.get("source") != plan.source.name_for(pair):
        raise FileExistsError(
            f"{path}: pair {pair} was made from {record.get('source')!r}, but --source now gives it "
            f"{plan.source.name_for(pair)!r} (photos added or removed?); choose another --out, or --force"
        )


__all__ = [
    "RANDOM",
    "PairWork",
    "RegionPlan",
    "check_models",
    "check_source",
    "defect_seed",
    "finish_pair",
    "make_plan",
    "sample_group",
    "size_of",
    "write_region_pair",
]
