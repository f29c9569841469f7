"""``anodiff eval``: score one generated category against the real one; write report.md, report.json and plots.

Each metric whose network weights are missing is skipped with a note naming the fix; the cheap mask metrics
(alignment, novelty, mask area) always run. FID/KID compare the generated images of a type with the real ones the
generator never saw (``reference="heldout"``) or with all of them (``"all"``). The Inception Score needs the user's
2015-12-05 Inception ``.pth`` (the registry-installable one has no logits layer, offline-assets.md §2.3); without it
the report says how to get it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from ..common.imageio import read_image
from ..common.mask_rule import read_binary_mask
from . import alignment as al
from .assets import inception_path
from .tree import generated_folder, generated_pairs, real_normals, real_split

log = logging.getLogger(__name__)

WORK_SIZE = 256
REFERENCES = ("heldout", "all")


@dataclass
class EvalOptions:
    """What ``anodiff eval`` computes; paths of weights may be None (then looked up as in ``metrics.assets``)."""

    generated: Path
    real: Path
    out: Path
    category: str | None = None
    dataset: str | None = None
    inception: str | None = None
    inception_logits: str | None = None
    vgg: str | None = None
    lpips_heads: str | None = None
    localization: bool = False
    split: str = "floor"
    reference: str = "heldout"
    limit: int | None = None
    seed: int = 0
    batch_size: int = 16
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    max_per_cluster: int = 50
    fid_kid: bool = True
    inception_score: bool = True
    lpips: bool = True
    device: str | None = None
    mixed_precision: str = "no"
    """Precision of the downstream trainings (localisation, classification); FID/KID, IS and LPIPS stay fp32 so
    their numbers remain comparable with the papers'."""
    loc: dict = field(default_factory=dict)
    classification: bool = False
    cls: dict = field(default_factory=dict)
    background: bool = True
    background_dilate: int = 5
    protocol: bool = False
    protocol_generated: int = 1000
    progress: bool = True


def _mask(path: Path) -> np.ndarray:
    """(256, 256) bool mask (its layout's rule, ``common.mask_rule``), resized by pixel share so small defects
    survive."""
    m = read_binary_mask(path).astype(np.float32)
    return cv2.resize(m, (WORK_SIZE, WORK_SIZE), interpolation=cv2.INTER_AREA) >= 0.5


def _small(path: Path) -> np.ndarray:
    return cv2.resize(read_image(path), (WORK_SIZE, WORK_SIZE), interpolation=cv2.INTER_AREA)


class _Normals:
    """The category's train/good images: thumbnails for the nearest search, 256 px copies loaded on demand."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.thumbs = al.thumbnails([_small(p) for p in paths])
        self._cache: dict[int, np.ndarray] = {}

    def nearest(self, image: np.ndarray) -> np.ndarray:
        k = al.nearest(image, self.thumbs)
        if k not in self._cache:
            self._cache[k] = _small(self.paths[k])
        return self._cache[k]


def _load_networks(
    opts: EvalOptions, notes: list[str], info: dict
) -> tuple[object | None, object | None, object | None]:
    inception = lpips = is_net = None
    import torch

    device = opts.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if opts.fid_kid:
        try:
            from .fid import load_inception

            inception = load_inception(inception_path(opts.inception), device)
        except (FileNotFoundError, ValueError) as exc:
            notes.append(f"FID/KID skipped: {exc}")
    if opts.inception_score:
        try:
            from .inception_score import describe_network, load_is_inception

            is_net = load_is_inception(opts.inception_logits, device)
            info["Inception Score"] = describe_network(opts.inception_logits)
        except (FileNotFoundError, ValueError) as exc:
            notes.append(f"Inception Score skipped: {exc}")
    if opts.lpips:
        try:
            from .perceptual import LPIPS

            lpips = LPIPS.from_files(opts.vgg, opts.lpips_heads, device)
        except (FileNotFoundError, ValueError) as exc:
            notes.append(f"IC-LPIPS skipped: {exc}")
    return inception, lpips, is_net


def _score_type(
    anomaly: str, pairs: list, opts: EvalOptions, category: str, normals: _Normals | None, nets, notes: list[str]
) -> dict:
    """One row of the report: counts, mask metrics, then FID/KID and IC-LPIPS when their networks are loaded."""
    inception, lpips, is_net = nets
    split = real_split(opts.real, category, anomaly, opts.split)
    gen_masks = [_mask(p.mask) for p in pairs]
    row: dict = {"generated": len(pairs), "real_train": len(split.train), "real_test": len(split.test)}
    row["empty_masks"] = int(sum(not m.any() for m in gen_masks))
    row["mask_area_generated"] = float(np.mean([m.mean() for m in gen_masks]))
    train_masks = [_mask(m) for _, m in split.train]
    row["mask_area_real"] = float(np.mean([m.mean() for m in train_masks + [_mask(m) for _, m in split.test]]))
    if normals is not None and len(pairs) >= 2:
        regions = []
        for p in pairs:
            image = _small(p.image)
            regions.append(al.defect_region(image, normals.nearest(image)))
        result = al.alignment(gen_masks, regions, WORK_SIZE)
        row.update(alignment_iou=result.mean_iou, chance_iou=result.chance_iou, alignment_margin=result.margin)
    if opts.background:
        from .background import background_row

        nearest = normals.nearest if normals is not None else None
        row.update(background_row(pairs, _mask, nearest, lpips, opts.background_dilate, WORK_SIZE))
    nov = al.novelty(gen_masks, train_masks, size=WORK_SIZE)
    row.update(novelty_share=nov.share, novelty_mean_best_iou=nov.mean_best_iou)
    images = [p.image for p in pairs]
    if inception is not None:
        from .fid import features, fid, kid

        reference = (
            [i for i, _ in split.test] if opts.reference == "heldout" else [i for i, _ in split.train + split.test]
        )
        if len(reference) >= 2 and len(images) >= 2:
            fa = features(images, inception, opts.batch_size, opts.progress)
            fb = features(reference, inception, opts.batch_size, opts.progress)
            k = kid(fa, fb, opts.kid_subsets, opts.kid_subset_size, opts.seed)
            row.update(
                fid=fid(fa, fb), kid=k.mean, kid_std=k.std, kid_x1000=1000 * k.mean, kid_subset_size=k.subset_size
            )
        else:
            notes.append(
                f"FID/KID skipped for {anomaly}: {len(reference)} real and {len(images)} generated images "
                "(2 of each needed; try --reference all)"
            )
    if is_net is not None:
        from .inception_score import SPLITS, inception_score, logits

        if len(images) >= SPLITS:
            res = inception_score(logits(images, is_net, opts.batch_size, opts.progress))
            row.update(inception_score=res.mean, inception_score_std=res.std)
        else:
            notes.append(f"Inception Score skipped for {anomaly}: {len(images)} generated images, {SPLITS} needed")
    if lpips is not None and split.train:
        from .ic_lpips import ic_lpips

        def distance(a, b=None):
            return lpips.pairwise(a, b, batch_size=opts.batch_size)

        res = ic_lpips(images, [i for i, _ in split.train], distance, opts.max_per_cluster, opts.seed)
        row.update(ic_lpips=res.score, ic_lpips_clusters=res.clusters_used, ic_lpips_assigned=res.assigned)
    return row


def evaluate(opts: EvalOptions) -> dict:
    """All metrics for one category; returns the report as a dict (NaN where undefined)."""
    if opts.split not in ("floor", "authors") or opts.reference not in REFERENCES:
        raise ValueError(
            f"split must be floor/authors and reference one of {REFERENCES}, got {opts.split}, {opts.reference}"
        )
    from ..data.layouts import detect_layout

    layout = detect_layout(opts.real)
    folder, category = generated_folder(opts.generated, opts.category)
    types = generated_pairs(folder)
    if opts.limit:
        types = {k: v[: opts.limit] for k, v in types.items()}
    notes: list[str] = []
    info: dict[str, str] = {}
    nets = _load_networks(opts, notes, info)
    normals = None
    try:
        normals = _Normals(real_normals(opts.real, category))
    except (FileNotFoundError, ValueError) as exc:
        notes.append(f"mask alignment skipped (needs the real train/good images): {exc}")
    rows = {}
    for anomaly, pairs in tqdm(sorted(types.items()), desc=f"eval {category}", unit="type", disable=not opts.progress):
        rows[anomaly] = _score_type(anomaly, pairs, opts, category, normals, nets, notes)
    report = {
        "category": category,
        "generated": str(folder),
        "real": str(Path(opts.real) / category),
        "settings": {k: v for k, v in asdict(opts).items() if k not in ("generated", "real", "out", "progress")},
        "types": rows,
        "mean": _means(rows),
        "notes": notes,
        "networks": info,
        "layout": layout.describe(),
        "dataset": opts.dataset or layout.dataset,
    }
    if opts.localization:
        report["localization"] = _localization(types, opts, category)
    if opts.protocol:
        from .protocol import run_protocol

        report["protocol"] = run_protocol(types, opts, category, notes)
    if opts.classification:
        from .classification import ClassificationConfig, classification_items, train_classifier

        try:
            items = classification_items(types, opts.real, category, opts.split)
            config = ClassificationConfig(
                seed=opts.seed, device=opts.device, mixed_precision=opts.mixed_precision, **opts.cls
            )
            report["classification"] = train_classifier(*items, config, opts.progress).as_dict()
        except ValueError as exc:
            notes.append(f"classification skipped: {exc}")
    return report


def _means(rows: dict[str, dict]) -> dict[str, float]:
    keys = sorted({k for r in rows.values() for k, v in r.items() if isinstance(v, float)})
    out = {}
    for key in keys:
        values = [r[key] for r in rows.values() if isinstance(r.get(key), float) and math.isfinite(r[key])]
        out[key] = float(np.mean(values)) if values else float("nan")
    return out


def _localization(types: dict, opts: EvalOptions, category: str) -> dict:
    from .localization import LocalizationConfig, build_data, train_localization

    config = LocalizationConfig(seed=opts.seed, device=opts.device, mixed_precision=opts.mixed_precision, **opts.loc)
    data = build_data(types, opts.real, category, opts.split, config.val_normal_share, opts.seed)
    return train_localization(data, config, opts.progress).as_dict()


__all__ = ["EvalOptions", "evaluate"]
