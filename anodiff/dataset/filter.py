"""Drop generated pairs whose mask cannot be trusted, with a reason for each, before they reach a training set.

Users of anomaly generators ask for failed samples to be filtered automatically and for masks that match the
defect and stay on the object (landscape.md §8). A pair (image, mask) is dropped, first reason wins, when

- the mask is empty (the anomaly branch drew nothing);
- it covers more than ``max_area`` of the image (the branch drew a background, not a defect);
- less than ``min_foreground`` of it lies on the object, given an object mask (computed by the caller, or by
  ``object_mask``: U²-Net-P saliency of the source photo, or of the image with the mask inpainted away so that
  a defect on the background does not count as object);
- given the normal photo the defect was put into (region control), the mask and the region where the image
  departs from that photo overlap with an IoU under ``min_agreement``. The change map is the per-pixel largest
  channel difference, Gaussian-blurred (``blur`` pixels) so VAE speckle does not count, above ``change_threshold``.

Images are numpy ``(H, W, 3)`` uint8 or float in [0, 1]; masks ``(H, W)`` bool, float (> 0.5 counts) or integer
(0/1 or 0/255). ``register`` adds ``anodiff filter``, which moves dropped pairs of a generate tree aside (never
deletes them) and records why in ``filter_report.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..common.imageio import as_float_image
from ..data.masks import U2NetP, grow_mask
from .export import TreePair, as_bool_mask, find_pairs, read_mask, read_rgb, write_replace

log = logging.getLogger(__name__)

EMPTY = "empty mask"
TOO_LARGE = "mask covers"
OFF_OBJECT = "mask mostly outside the object"
DISAGREES = "mask disagrees with where the image departs from the source"
REASONS = (EMPTY, TOO_LARGE, OFF_OBJECT, DISAGREES)
"""How each reason string starts, in the order the checks run."""
FOREGROUNDS = ("none", "u2netp")
REPORT_FILE = "filter_report.json"
REJECTED_DIR = "rejected"
"""Default ``--move-to``, under the tree: not a category folder (it has no ``test/``), so later commands skip it."""


def _unit(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def _pct(x: float) -> str:
    return f"{100.0 * x:.3g}%"


def match_size(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``image`` resized to ``(H, W)`` (area when shrinking, linear when enlarging); unchanged if it fits."""
    if image.shape[:2] == tuple(shape):
        return image
    h, w = shape
    shrink = image.shape[0] * image.shape[1] > h * w
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def object_mask(
    image: np.ndarray, model: U2NetP | None = None, threshold: float = 0.5, exclude: Any = None
) -> np.ndarray:
    """``(H, W)`` bool: where the object is, as U²-Net-P saliency of the whole image above ``threshold``.

    exclude: ``(H, W)`` region (the mask under test) inpainted from its surroundings first, so that a defect drawn
    on the background is not itself taken for part of the object; one on the object is filled with object.
    """
    model = U2NetP() if model is None else model
    x = as_float_image(image)
    if exclude is not None:
        region = grow_mask(as_bool_mask(exclude, x.shape[:2], "exclude"), 2)
        if region.any():
            u8 = np.round(x * 255.0).astype(np.uint8)
            x = cv2.inpaint(u8, region.astype(np.uint8), 3, cv2.INPAINT_TELEA)
    return model.saliency(x) > _unit(threshold, "threshold")


def change_map(image: np.ndarray, source: np.ndarray, change_threshold: float = 0.1, blur: float = 2.0) -> np.ndarray:
    """``(H, W)`` bool: where ``image`` departs from ``source`` (both ``(H, W, 3)``): the largest channel
    difference, Gaussian-blurred with sigma ``blur`` pixels (0: none), above ``change_threshold``."""
    x = as_float_image(image)
    s = as_float_image(source, "source")
    if s.shape != x.shape:
        raise ValueError(f"source must have the image's size {x.shape[:2]}, got {s.shape[:2]}; resize it first")
    diff = np.abs(x - s).max(axis=2)
    if blur < 0:
        raise ValueError(f"blur must be >= 0 pixels, got {blur}")
    if blur > 0:
        diff = cv2.GaussianBlur(diff, (0, 0), sigmaX=float(blur))
    return diff > _unit(change_threshold, "change_threshold")


def check_pair(
    image: np.ndarray,
    mask: Any,
    foreground: Any = None,
    source: np.ndarray | None = None,
    max_area: float = 0.5,
    min_foreground: float = 0.5,
    min_agreement: float = 0.3,
    change_threshold: float = 0.1,
    blur: float = 2.0,
) -> str | None:
    """Why the pair (``image`` ``(H, W, 3)``, ``mask`` ``(H, W)``) should be dropped, or None to keep it.

    foreground: ``(H, W)`` object mask, or None to skip that check. source: the ``(H, W, 3)`` normal photo the
    defect was generated into, or None to skip the agreement check. Limits as in the module docstring.
    """
    x = as_float_image(image)
    m = as_bool_mask(mask, x.shape[:2])
    if _unit(max_area, "max_area") == 0.0:
        raise ValueError("max_area must be in (0, 1], got 0; 1 turns the area check off")
    min_foreground, min_agreement = _unit(min_foreground, "min_foreground"), _unit(min_agreement, "min_agreement")
    total = int(m.sum())
    if total == 0:
        return EMPTY
    area = total / m.size
    if area > max_area:
        return f"{TOO_LARGE} {_pct(area)} of the image (> max_area {_pct(max_area)})"
    if foreground is not None:
        on = float((m & as_bool_mask(foreground, m.shape, "foreground")).sum()) / total
        if on < min_foreground:
            return f"{OFF_OBJECT} ({_pct(on)} on the foreground < min_foreground {_pct(min_foreground)})"
    if source is not None:
        changed = change_map(x, source, change_threshold, blur)
        iou = float((m & changed).sum()) / float((m | changed).sum())
        if iou < min_agreement:
            return f"{DISAGREES} (IoU {iou:.2f} < min_agreement {min_agreement:.2f})"
    return None


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
    all, or one per pair. limits: ``max_area``, ``min_foreground``, ``min_agreement``, ``change_threshold``, ``blur``.
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
    **limits: float,
) -> FilterReport:
    """Check every pair of a generate tree (``<root>/<category>/test/<anomaly>/NNN.png`` + mask) and move the
    dropped ones (image, mask, anomaly part) under ``move_to`` (default ``<root>/rejected``), keeping their
    relative paths; with ``dry_run`` nothing moves. The run is appended to ``<root>/filter_report.json``."""
    root = Path(root)
    if foreground not in FOREGROUNDS:
        raise ValueError(f"foreground must be one of {', '.join(FOREGROUNDS)}, got {foreground!r}")
    move_to = Path(move_to) if move_to is not None else root / REJECTED_DIR
    pairs = find_pairs(root, category, anomaly)
    model = U2NetP() if foreground == "u2netp" else None
    photo = read_rgb(Path(source)) if source is not None else None
    report = FilterReport(root)
    sized: dict[tuple[int, int], tuple[np.ndarray, np.ndarray | None]] = {}  # source and its object mask per size
    for pair in pairs:
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
        record = {"category": pair.category, "anomaly": pair.anomaly, "index": pair.index,
                  "image": pair.image.relative_to(root).as_posix(), "reason": reason}  # fmt: skip
        record["moved_to"] = None if dry_run else _move_aside(pair, root, move_to)
        report.dropped.append(record)
        log.info("%s: %s", record["image"], reason)
    run = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dry_run": dry_run, "foreground": foreground, "source": str(source) if source is not None else None,
        "move_to": None if dry_run else str(move_to), "limits": limits,
        "checked": report.checked, "kept": report.kept, "dropped": report.dropped,
    }  # fmt: skip
    report.report = root / REPORT_FILE
    runs = []
    if report.report.is_file():
        try:
            runs = json.loads(report.report.read_text(encoding="utf-8"))["runs"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{report.report}: unreadable ({exc}); move it away to start a new report") from exc
    write_replace(report.report, json.dumps({"runs": [*runs, run]}, indent=2).encode("utf-8"))
    return report


def _run(args: argparse.Namespace) -> int:
    names = ("max_area", "min_foreground", "min_agreement", "change_threshold", "blur")
    limits = {name: getattr(args, name) for name in names}
    try:
        report = filter_tree(args.dir, args.category, args.anomaly, args.foreground, args.source, args.move_to,
                             args.dry_run, **limits)  # fmt: skip
    except (ValueError, TypeError, FileNotFoundError, NotADirectoryError, FileExistsError) as exc:
        print(f"anodiff filter: error: {exc}", file=sys.stderr)
        return 2
    for record in report.dropped:
        print(f"{record['image']}: {record['reason']}")
    verb = "would move" if args.dry_run else "moved"
    where = "" if args.dry_run else f" to {args.move_to or Path(args.dir) / REJECTED_DIR}"
    print(f"checked {report.checked} pair(s): kept {report.kept}, {verb} {len(report.dropped)}{where}; "
          f"reasons in {report.report}")  # fmt: skip
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``filter`` to the ``anodiff`` command line; its ``func`` returns the exit code."""
    p = subparsers.add_parser(
        "filter",
        help="move generated pairs with untrustworthy masks aside, with a reason for each",
        description=(
            "Checks every pair of a tree written by anodiff generate and moves the dropped ones (image, mask, "
            "anomaly part) aside, never deleting them; the reasons go to DIR/filter_report.json (appended per run)."
        ),
    )
    add = p.add_argument
    add("--dir", required=True, metavar="DIR", help="root of a tree written by anodiff generate (its --out)")
    add("--category", default=None, help="only this category (default: all)")
    add("--anomaly", default=None, help="only this anomaly type (default: all)")
    add("--max-area", type=float, default=0.5, help="drop masks covering more of the image (default: 0.5)")
    add("--foreground", choices=FOREGROUNDS, default="none",
        help="u2netp: drop masks mostly off the object found by U2-Net-P (object categories, not textures); "
             "default: none")  # fmt: skip
    add("--min-foreground", type=float, default=0.5, help="share of the mask on the object (default: 0.5)")
    add("--source", default=None, metavar="IMAGE",
        help="the normal photo the defects were generated into (region control); resized to each image")  # fmt: skip
    add("--min-agreement", type=float, default=0.3, help="IoU of mask and changed region, with --source (0.3)")
    add("--change-threshold", type=float, default=0.1, help="difference counted as a change, in [0, 1] (0.1)")
    add("--blur", type=float, default=2.0, help="Gaussian sigma in pixels on the difference (default: 2)")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--move-to", default=None, metavar="DIR", help=f"where dropped pairs go (default: DIR/{REJECTED_DIR})"
    )
    where.add_argument("--dry-run", action="store_true", help="only report; move nothing")
    p.set_defaults(func=_run)
    return p


__all__ = [
    "DISAGREES", "EMPTY", "FOREGROUNDS", "OFF_OBJECT", "REASONS", "TOO_LARGE", "FilterReport", "as_bool_mask",
    "change_map", "check_pair", "filter_pairs", "filter_tree", "match_size", "object_mask", "register",
]  # fmt: skip
