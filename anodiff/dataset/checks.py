"""The checks behind the pair filter: is a generated pair's mask empty, too small or too large, split into too
many pieces, off the object, or out of step with where the image departs from its source photo
(``anodiff.dataset.filter`` runs them over many pairs).

Images are numpy ``(H, W, 3)`` uint8 or float in [0, 1]; masks ``(H, W)`` bool, float (> 0.5 counts) or integer
(0/1 or 0/255).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from ..common.imageio import as_float_image, resize
from ..data.masks import U2NetP, grow_mask
from .export import as_bool_mask

EMPTY = "empty mask"
TOO_SMALL = "mask too small"
TOO_LARGE = "mask covers"
PIECES = "mask in too many pieces"
OFF_OBJECT = "mask mostly outside the object"
DISAGREES = "mask disagrees with where the image departs from the source"
REASONS = (EMPTY, TOO_SMALL, TOO_LARGE, PIECES, OFF_OBJECT, DISAGREES)
"""How each reason string starts, in the order the checks run."""
FOREGROUNDS = ("none", "u2netp")
GATE = {"min_area": 0.001, "max_area": 0.2, "max_pieces": 5}
"""The mask quality gate's defaults: a defect covers 0.1%-20% of the image in at most 5 pieces (8-connected)."""


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
    return resize(image, *shape)


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
    max_area: float = GATE["max_area"],
    min_foreground: float = 0.5,
    min_agreement: float = 0.3,
    change_threshold: float = 0.1,
    blur: float = 2.0,
    min_area: float = GATE["min_area"],
    max_pieces: int = GATE["max_pieces"],
) -> str | None:
    """Why the pair (``image`` ``(H, W, 3)``, ``mask`` ``(H, W)``) should be dropped, or None to keep it.

    foreground: ``(H, W)`` object mask, or None to skip that check. source: the ``(H, W, 3)`` normal photo the
    defect was generated into, or None to skip the agreement check. min_area/max_area: the mask's share of the
    image must lie in this range (0 and 1 turn either end off); max_pieces: at most this many 8-connected pieces
    (0: no limit). Limits as in the module docstring.
    """
    x = as_float_image(image)
    m = as_bool_mask(mask, x.shape[:2])
    if _unit(max_area, "max_area") == 0.0:
        raise ValueError("max_area must be in (0, 1], got 0; 1 turns the area check off")
    if _unit(min_area, "min_area") > max_area:
        raise ValueError(f"min_area {min_area} must not exceed max_area {max_area}")
    if isinstance(max_pieces, bool) or not isinstance(max_pieces, (int, np.integer)) or max_pieces < 0:
        raise ValueError(f"max_pieces must be an integer >= 0 (0: no limit), got {max_pieces!r}")
    min_foreground, min_agreement = _unit(min_foreground, "min_foreground"), _unit(min_agreement, "min_agreement")
    total = int(m.sum())
    if total == 0:
        return EMPTY
    area = total / m.size
    if area < min_area:
        return f"{TOO_SMALL}: {_pct(area)} of the image ({total} px, < min_area {_pct(min_area)})"
    if area > max_area:
        return f"{TOO_LARGE} {_pct(area)} of the image (> max_area {_pct(max_area)})"
    pieces = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)[0] - 1
    if max_pieces and pieces > max_pieces:
        return f"{PIECES}: {pieces} (> max_pieces {max_pieces})"
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
