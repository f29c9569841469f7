"""Drop generated pairs whose mask cannot be trusted, with a reason for each, before they reach a training set.

Users of anomaly generators ask for failed samples to be filtered automatically and for masks that match the
defect and stay on the object (landscape.md §8). A pair (image, mask) is dropped, first reason wins, when

- the mask is empty (the anomaly branch drew nothing);
- it covers less than ``min_area`` of the image (a speck: default 0.1%) or more than ``max_area`` (the branch
  drew a background, not a defect: default 20%);
- it is split into more than ``max_pieces`` 8-connected pieces (scattered noise, not one defect: default 5; raise
  it for pairs made with ``--defects K``);
- less than ``min_foreground`` of it lies on the object, given an object mask (computed by the caller, or by
  ``object_mask``: U²-Net-P saliency of the source photo, or of the image with the mask inpainted away so that
  a defect on the background does not count as object);
- given the normal photo the defect was put into (region control), the mask and the region where the image
  departs from that photo overlap with an IoU under ``min_agreement``. The change map is the per-pixel largest
  channel difference, Gaussian-blurred (``blur`` pixels) so VAE speckle does not count, above ``change_threshold``.

Images are numpy ``(H, W, 3)`` uint8 or float in [0, 1]; masks ``(H, W)`` bool, float (> 0.5 counts) or integer
(0/1 or 0/255). The checks themselves are in ``anodiff.dataset.checks``; here they run over a batch
(``filter_pairs``) or a generate tree (``filter_tree``, behind ``anodiff filter``), which moves dropped pairs aside
(never deletes them) and records why in ``filter_report.json``.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..common.imageio import read_rgb, write_atomic
from ..common.jobs import SharedFileLock
from ..data.masks import U2NetP
from .checks import (
    DISAGREES,
    EMPTY,
    FOREGROUNDS,
    GATE,
    OFF_OBJECT,
    PIECES,
    REASONS,
    TOO_LARGE,
    TOO_SMALL,
    as_bool_mask,
    change_map,
    check_pair,
    match_size,
    object_mask,
)
from .tree import TreePair, find_pairs, read_mask

log = logging.getLogger(__name__)

REPORT_FILE = "filter_report.json"
REJECTED_DIR = "rejected"
"""Default ``--move-to``, under the tree: not a category folder (it has no ``test/``), so later commands skip it."""


def _per_pair(value: Any, count: int, single_ndim: int, name: str) -> list[Any]:
    """One entry per pair from None, one array shared by all (``single_ndim`` dims) or a sequence of ``count``."""
    if value is None:
        return [None] * count
    if isinstance(value, np.ndarray) and value.ndim == single_ndim:
        return [value] * count
    if len(value) != count:
        raise ValueError(f"{name}: {len(value)} given for {count} pairs; give one, or one per pair")
    return list(value)


def filter_pairs(
    images: Sequence[np.ndarray] | np.ndarray,
    masks: Sequence[Any] | np.ndarray,
    foregrounds: Any = None,
    sources: Any = None,
    model: U2NetP | None = None,
    **limits: float,
) -> tuple[list[int], dict[int, str]]:
    """(indices kept, {index dropped: reason}) for ``check_pair`` over a batch.

    images ``(B, H, W, 3)``, masks ``(B, H, W)`` (arrays or sequences). foregrounds: None; ``"u2netp"``
    (``object_mask`` with ``model``, default ``U2NetP()``: of the source when given, else of the image with its
    mask inpainted away); one ``(H, W)`` mask for all, or one per pair. sources: None, one ``(H, W, 3)`` photo for
    all, or one per pair. limits: ``min_area``, ``max_area``, ``max_pieces``, ``min_foreground``, ``min_agreement``,
    ``change_threshold``, ``blur``.
    """
    if len(images) != len(masks):
        raise ValueError(f"masks: {len(masks)} masks for {len(images)} images; give one mask per image")
    if isinstance(foregrounds, str):
        if foregrounds not in FOREGROUNDS:
            raise ValueError(f"foregrounds must be one of {', '.join(FOREGROUNDS)} or masks, got {foregrounds!r}")
        if foregrounds == "u2netp":
            model = U2NetP() if model is None else model
            of_source: dict[int, np.ndarray] = {}  # a shared photo is segmented once
            foregrounds = []
            for image, mask, src in zip(images, masks, _per_pair(sources, len(images), 3, "sources")):
                if src is None:
                    foregrounds.append(object_mask(image, model, exclude=mask))
                    continue
                if id(src) not in of_source:
                    of_source[id(src)] = object_mask(src, model)
                foregrounds.append(of_source[id(src)])
        else:
            foregrounds = None
    fgs = _per_pair(foregrounds, len(images), 2, "foregrounds")
    srcs = _per_pair(sources, len(images), 3, "sources")
    kept, dropped = [], {}
    for i, (image, mask, fg, src) in enumerate(zip(images, masks, fgs, srcs)):
        reason = check_pair(image, mask, fg, src, **limits)
        if reason is None:
            kept.append(i)
        else:
            dropped[i] = reason
            log.info("pair %d dropped: %s", i, reason)
    return kept, dropped


@dataclass
class FilterReport:
    """What ``filter_tree`` did: pairs checked, kept, and one record per dropped pair."""

    root: Path
    checked: int = 0
    kept: int = 0
    dropped: list[dict[str, Any]] = field(default_factory=list)
    report: Path | None = None


def _free_path(path: Path) -> Path:
    """``path``, or ``name~N.ext`` for the first N that is free: moving aside never overwrites an earlier reject."""
    k = 1
    candidate = path
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}~{k}{path.suffix}")
        k += 1
    return candidate


def _move_aside(pair: TreePair, root: Path, move_to: Path) -> list[str]:
    moved = []
    for src in (pair.image, pair.mask, pair.part):
        if src is None or not src.is_file():
            continue
        dest = _free_path(move_to / src.relative_to(root))
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(src), str(dest))
        moved.append(dest.as_posix())
    return moved


def filter_tree(
    root: str | Path,
    category: str | None = None,
    anomaly: str | None = None,
    foreground: str = "none",
    source: str | Path | None = None,
    move_to: str | Path | None = None,
    dry_run: bool = False,
    progress: bool | None = None,
    **limits: float,
) -> FilterReport:
    """Check every pair of a generate tree (``<root>/<category>/test/<anomaly>/NNN.png`` + mask) and move the
    dropped ones (image, mask, anomaly part) under ``move_to`` (default ``<root>/rejected``), keeping their
    relative paths; with ``dry_run`` nothing moves. The run is appended to ``<root>/filter_report.json``.
    progress: a progress bar (U²-Net-P per image can take minutes); None shows it only on a terminal."""
    root = Path(root)
    if foreground not in FOREGROUNDS:
        raise ValueError(f"foreground must be one of {', '.join(FOREGROUNDS)}, got {foreground!r}")
    move_to = Path(move_to) if move_to is not None else root / REJECTED_DIR
    pairs = find_pairs(root, category, anomaly)
    model = U2NetP() if foreground == "u2netp" else None
    photo = read_rgb(Path(source)) if source is not None else None
    report = FilterReport(root)
    sized: dict[tuple[int, int], tuple[np.ndarray, np.ndarray | None]] = {}  # source and its object mask per size
    for pair in tqdm(pairs, desc="filter", unit="pair", disable=None if progress is None else not progress):
        image = read_rgb(pair.image)
        mask = read_mask(pair.mask)
        src = fg = None
        if photo is not None:
            if image.shape[:2] not in sized:
                fitted = match_size(photo, image.shape[:2])
                sized[image.shape[:2]] = fitted, object_mask(fitted, model) if model is not None else None
            src, fg = sized[image.shape[:2]]
        elif model is not None:
            fg = object_mask(image, model, exclude=mask)
        reason = check_pair(image, mask, fg, src, **limits)
        report.checked += 1
        if reason is None:
            report.kept += 1
            continue
        record = {
            "category": pair.category,
            "anomaly": pair.anomaly,
            "index": pair.index,
            "image": pair.image.relative_to(root).as_posix(),
            "reason": reason,
        }
        record["moved_to"] = None if dry_run else _move_aside(pair, root, move_to)
        report.dropped.append(record)
        log.info("%s: %s", record["image"], reason)
    run = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dry_run": dry_run,
        "foreground": foreground,
        "source": str(source) if source is not None else None,
        "move_to": None if dry_run else str(move_to),
        "limits": limits,
        "checked": report.checked,
        "kept": report.kept,
        "dropped": report.dropped,
    }
    report.report = root / REPORT_FILE
    append_run(report.report, run)
    return report


def append_run(path: Path, run: dict[str, Any]) -> None:
    """Add ``run`` to the report at ``path`` under a short lock, written atomically: two ``anodiff filter`` runs
    on one root would otherwise both read the old report and the later write would drop the other's run."""
    with SharedFileLock(path.with_name(path.name + ".lock")):
        runs = []
        if path.is_file():
            try:
                runs = json.loads(path.read_text(encoding="utf-8"))["runs"]
                if not isinstance(runs, list):
                    raise TypeError("'runs' must be a list")
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ValueError(
                    f"{path}: unreadable ({exc}); expected a filter report {{'runs': [...]}}, move it "
                    "away to start a new report"
                ) from exc
        write_atomic(path, json.dumps({"runs": [*runs, run]}, indent=2).encode("utf-8"))


__all__ = [
    "DISAGREES",
    "EMPTY",
    "FOREGROUNDS",
    "GATE",
    "OFF_OBJECT",
    "PIECES",
    "REASONS",
    "TOO_LARGE",
    "TOO_SMALL",
    "FilterReport",
    "as_bool_mask",
    "change_map",
    "check_pair",
    "filter_pairs",
    "filter_tree",
    "match_size",
    "object_mask",
]
