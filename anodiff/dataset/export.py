"""Export (image, mask) pairs as a dataset that detectors and anomaly-detection code read: MVTec AD and COCO.

Layout, under ``out_dir``::

    <category>/test/<anomaly>/000.png                the image (every format)
    <category>/ground_truth/<anomaly>/000_mask.png   the mask, 0/255 ("mvtec")
    annotations/<category>.json                      COCO instances ("coco"); one file per object category,
                                                     its COCO categories are the anomaly types

Exports add, never replace: numbering continues from the recorded next index (``anodiff.dataset.numbering``;
the first export into a folder continues after the highest index in it), a file is created only if its name is
free (hard link from a temporary file, which fails instead of overwriting), and each call's COCO records go to a
JSON-lines shard of its own that ``merge_coco`` turns into the COCO file (``anodiff.dataset.coco``), so several
exporters may share ``out_dir``. COCO ``file_name``s are relative to
``out_dir``. Each 8-connected component of a mask is one annotation (``instances="component"``, what detectors
train on) or the whole mask is one (``"mask"``); segmentations are compressed RLE with ``iscrowd`` 0, and area
and bbox come from pycocotools.

``anodiff export`` (``anodiff.cli.export``) reads a tree written by ``anodiff generate`` (``find_pairs``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..common.files import write_new
from ..common.imageio import as_float_image, encode_png, read_rgb
from ..common.mask_rule import HALF, binarise
from . import coco, numbering
from .coco import INSTANCES, _rle_tools, coco_instances, finalise, load_coco, merge_coco
from .sidecar import defect_instances, label_matches
from .tree import TreePair, find_pairs, read_mask

log = logging.getLogger(__name__)

FORMATS = ("mvtec", "coco")


@dataclass
class ExportReport:
    """What one ``export_dataset`` call wrote: pair indices, files, and the COCO file and its new annotations."""

    root: Path
    category: str
    anomaly: str
    formats: tuple[str, ...]
    indices: list[int] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    masks: list[Path] = field(default_factory=list)
    coco: Path | None = None
    annotations: int = 0
    empty_masks: int = 0

    def summary(self) -> str:
        if not self.indices:
            return f"{self.category}/{self.anomaly}: nothing to export"
        span = f"{self.indices[0]:03d}-{self.indices[-1]:03d}"
        coco = f", {self.annotations} COCO annotation(s) in {self.coco}" if self.coco else ""
        empty = f", {self.empty_masks} with an empty mask" if self.empty_masks else ""
        return f"{self.root / self.category}: {len(self.indices)} {self.anomaly} pair(s) as {span}{coco}{empty}"


def parse_formats(fmt: str | Sequence[str]) -> tuple[str, ...]:
    """``("mvtec", "coco")`` from ``"mvtec,coco"``, ``"mvtec+coco"`` or a sequence; unknown names are an error."""
    names = fmt.replace("+", ",").split(",") if isinstance(fmt, str) else list(fmt)
    names = [n.strip().lower() for n in names if n.strip()]
    bad = [n for n in names if n not in FORMATS]
    if bad or not names:
        raise ValueError(f"fmt must name one or more of {', '.join(FORMATS)}, got {fmt!r}")
    return tuple(dict.fromkeys(names))


def as_bool_mask(mask: Any, shape: tuple[int, int], name: str = "mask") -> np.ndarray:
    """``(H, W)`` bool from a bool, float (> 0.5) or integer (0/1 or 0/255) mask of the given ``(H, W)``."""
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[2] == 1:
        m = m[..., 0]
    if m.shape != tuple(shape):
        raise ValueError(f"{name} must have the image's size {tuple(shape)}, got shape {m.shape}")
    if m.dtype == bool:
        return m
    return binarise(m, HALF, name)


def stored_pixels(image: Any) -> np.ndarray:
    """What an exported image file stores: 8/16-bit grey or RGB pixels as given (a grey or 16-bit photo stays
    one), anything else as 8-bit RGB."""
    x = np.asarray(image)
    if x.dtype in (np.uint8, np.uint16) and (x.ndim == 2 or (x.ndim == 3 and x.shape[2] == 3)):
        return x
    return np.round(as_float_image(x) * 255.0).astype(np.uint8)


def check_name(value: str, what: str) -> str:
    """A plain folder name (no separators, not '.' or '..'); ``what`` names the input in the error."""
    if not isinstance(value, str) or value.strip() in ("", ".", "..") or any(c in value for c in "/\\"):
        raise ValueError(f"{what} must be a plain folder name, got {value!r}")
    return value.strip()


def export_dataset(
    images: Iterable[np.ndarray],
    masks: Iterable[Any],
    out_dir: str | Path,
    category: str,
    anomaly: str,
    fmt: str | Sequence[str] = FORMATS,
    start: int | None = None,
    instances: str = "component",
    merge: bool = True,
    sidecars: Iterable[tuple[dict | None, np.ndarray | None]] | None = None,
    progress: bool | None = None,
    total: int | None = None,
) -> ExportReport:
    """Add the pairs to ``out_dir`` in the formats ``fmt`` (module docstring); returns what was written.

    images: ``(H, W, 3)`` uint8 or float in [0, 1] each, or 8/16-bit grey ``(H, W)`` or RGB, stored as given
    (a ``(B, H, W, 3)`` array works); masks: ``(H, W)`` each,
    bool, float (> 0.5) or integer (0/1, 0/255). Both may be generators. start: the first index, which must be
    free (default: the next free one). Each pair costs the same however large the dataset: its index is claimed
    by creating its image file, its COCO record appended to this call's shard. merge: rebuild the COCO file from
    the shards at the end (reads them all; pass False when exporting batch by batch and call ``merge_coco``
    once at the end). Several processes may export into one ``out_dir`` at the same time.
    sidecars: per pair ``(record, label mask)`` from ``dataset.sidecar`` (either may be None): the record goes into
    the COCO image entry as ``anodiff`` (source photo, seed, model...), and a label mask gives one annotation per
    defect id instead of per component, when it covers exactly the mask (else it is ignored with a warning).
    progress: a progress bar (reading and encoding a large tree takes minutes); None shows it only on a terminal.
    total: the pair count when ``images`` is a generator, so the bar can show how far it is.
    """
    formats = parse_formats(fmt)
    category, anomaly = check_name(category, "category"), check_name(anomaly, "anomaly")
    _check_export_args(images, masks, start, instances)
    root = Path(out_dir)
    folder = root / category
    report = ExportReport(root, category, anomaly, formats)
    shard = None
    if "coco" in formats:
        _rle_tools()  # fail before writing anything
        coco.adopt_legacy(root, category)  # also refuses a file that is not COCO, before anything is written
    index = _first_index(root, category, anomaly, start)
    extras = iter(sidecars) if sidecars is not None else None
    bar = tqdm(
        zip(images, masks, strict=True),
        total=len(images) if hasattr(images, "__len__") else total,
        desc=f"export {category}/{anomaly}",
        unit="pair",
        disable=None if progress is None else not progress,
    )
    try:
        for image, mask in bar:
            meta, label = next(extras, (None, None)) if extras is not None else (None, None)
            pixels = stored_pixels(image)
            m = as_bool_mask(mask, pixels.shape[:2])
            index, image_path = numbering.claim(folder, anomaly, index, encode_png(pixels), start is None, start)
            report.images.append(image_path)
            name = f"{index:03d}"
            if "mvtec" in formats:
                report.masks.append(folder / "ground_truth" / anomaly / f"{name}_mask.png")
                write_new(report.masks[-1], encode_png(m.astype(np.uint8) * 255))
            if "coco" in formats:
                if shard is None:
                    shard = coco.ShardWriter(root, category)
                report.annotations += _add_coco(shard, root, anomaly, image_path, m, label, meta, instances)
            report.indices.append(index)
            report.empty_masks += int(not m.any())
            index += 1
    finally:
        bar.close()
        if report.indices:  # a failure before the first pair finished must not hide its own error
            numbering.record_next_index(root, category, anomaly, max(report.indices) + 1)
        if shard is not None:
            shard.close()
            if merge:
                report.coco = coco.merge_coco(root, category)
    if "coco" in formats and report.coco is None and merge:
        report.coco = coco.coco_path(root, category)
    if report.empty_masks:
        log.warning("%d exported pair(s) have an empty mask; run the pair filter first", report.empty_masks)
    return report


def _check_export_args(images: Iterable, masks: Iterable, start: int | None, instances: str) -> None:
    if instances not in INSTANCES:
        raise ValueError(f"instances must be one of {', '.join(INSTANCES)}, got {instances!r}")
    if hasattr(images, "__len__") and hasattr(masks, "__len__") and len(images) != len(masks):
        raise ValueError(f"masks: {len(masks)} masks for {len(images)} images; give one mask per image")
    if start is not None and (isinstance(start, bool) or not isinstance(start, int) or start < 0):
        raise ValueError(f"start must be an integer >= 0, got {start!r}")


def _first_index(root: Path, category: str, anomaly: str, start: int | None) -> int:
    """``start`` when it is free, else the recorded next free index (the folders listed once without a record)."""
    folder = root / category
    following = numbering.next_index(root, category, anomaly)
    if following is None:  # no record yet: list the folders, once
        following = numbering.after_files(folder, anomaly)
    if start is not None and numbering.taken(folder, anomaly, start):
        raise FileExistsError(
            f"start={start}: pair {start:03d} already exists in {folder}; the next free index is "
            f"{following}, or leave start unset"
        )
    return following if start is None else start


def _add_coco(
    shard: coco.ShardWriter,
    root: Path,
    anomaly: str,
    image_path: Path,
    mask: np.ndarray,
    label: np.ndarray | None,
    meta: dict | None,
    instances: str,
) -> int:
    """Append the pair's COCO record to this call's shard; returns its annotation count (one per defect id of a
    trusted label mask, else per ``instances``)."""
    label = _trusted(label, mask, image_path, meta)
    anns = (
        defect_instances(label, mask, (meta or {}).get("defect_types"))
        if label is not None
        else coco_instances(mask, instances)
    )
    shard.add(
        image_path.relative_to(root).as_posix(),
        int(mask.shape[1]),
        int(mask.shape[0]),
        anomaly,
        anns,
        {"anodiff": meta} if meta else None,
    )
    return len(anns)


def _trusted(label: np.ndarray | None, mask: np.ndarray, image_path: Path, meta: dict | None) -> np.ndarray | None:
    """The label, or None (annotations from the mask) when it does not cover exactly the mask: a label left by an
    earlier run of the pair would otherwise give COCO boxes where the mask has no defect."""
    if label is None or label_matches(label, mask):
        return label
    pair = f"pair {meta['pair']}" if isinstance(meta, dict) and "pair" in meta else "a pair"
    log.warning(
        "%s (%s): its label mask does not cover exactly its mask (a label left by an earlier run?); "
        "ignored, the COCO annotations come from the mask",
        image_path,
        pair,
    )
    return None


__all__ = [
    "FORMATS",
    "INSTANCES",
    "ExportReport",
    "TreePair",
    "as_bool_mask",
    "coco_instances",
    "encode_png",
    "export_dataset",
    "finalise",
    "find_pairs",
    "load_coco",
    "merge_coco",
    "parse_formats",
    "read_mask",
    "read_rgb",
    "write_new",
]
