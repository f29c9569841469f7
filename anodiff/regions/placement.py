"""Where a generated defect may go: random regions that lie wholly on the object, never on the background.

DualAnoDiff draws the defect wherever the model likes; users who want control hand it a mask. This module makes
such masks: ``foreground_mask`` finds the object with U²-Net-P saliency (optionally eroded so regions keep clear
of the object's edge) and ``sample_regions`` places ellipses or rectangles of a random size and aspect inside it,
reproducibly from a seed. ``feather`` softens a region's edge inwards, so a soft mask never reaches the background.

Arrays are numpy: images ``(H, W, 3)`` uint8 or float in [0, 1], masks ``(H, W)`` bool. No torch, no ComfyUI.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from ..common.imageio import as_float_image
from ..data.masks import U2NetP, grow_mask, overlay

SHAPES = ("ellipse", "rectangle")
PALETTE = ((1.0, 0.85, 0.0), (1.0, 0.2, 0.9), (0.2, 0.6, 1.0), (1.0, 0.15, 0.1), (1.0, 0.55, 0.0))
"""Region tints in ``preview``, cycled; the foreground outline is ``OUTLINE``."""
OUTLINE = (0.1, 0.9, 0.2)
_SLACK = 1.5
"""Pixels of leeway when the distance transform rules out centres: it only prunes, the exact test decides."""


def _check_int(value: int, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _check_range(pair: Sequence[float], name: str, low: float, high: float) -> tuple[float, float]:
    """``(min, max)`` with ``low < min <= max <= high``."""
    if len(pair) != 2:
        raise ValueError(f"{name} must be a (min, max) pair, got {pair!r}")
    lo, hi = float(pair[0]), float(pair[1])
    if not (low < lo <= hi <= high):
        raise ValueError(
            f"{name} must satisfy {low:g} < min <= max <= {high:g}, got ({lo:g}, {hi:g}); swap or fix them"
        )
    return lo, hi


def as_mask(mask: Any, name: str = "foreground") -> np.ndarray:
    """``(H, W)`` bool from a bool mask, or a numeric one where > 0.5 counts."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or 0 in mask.shape:
        raise ValueError(
            f"{name} must be a non-empty 2-D mask (H, W), got shape {mask.shape}; pass one mask of a batch"
        )
    return mask if mask.dtype == bool else mask > 0.5


def foreground_mask(image: np.ndarray, model: Any = None, threshold: float = 0.5, erode: int = 0) -> np.ndarray:
    """``(H, W)`` bool: the salient object of a normal photo ``(H, W, 3)``, where defects may go.

    U²-Net-P saliency (min-max normalised, as for anomaly masks) above ``threshold``, eroded by ``erode`` pixels
    so that regions placed in it keep that far from the object's edge. model: a ``U2NetP`` or anything with
    ``saliency(image) -> (H, W)`` in [0, 1]; default one found by ``anodiff.common.assets.u2netp_path``.
    """
    image = as_float_image(image)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number)) or not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
    erode = _check_int(erode, "erode", 0)
    if model is None:
        model = U2NetP()
    elif not callable(getattr(model, "saliency", None)):
        raise TypeError(f"model must be a U2NetP (or have a saliency method), got {type(model).__name__}")
    score = np.asarray(model.saliency(image))
    if score.shape != image.shape[:2]:
        raise ValueError(f"the model's saliency has shape {score.shape}, expected the image's {image.shape[:2]}")
    return grow_mask(score > threshold, -erode)


def _template(height: int, width: int, shape: str) -> np.ndarray:
    """``(height, width)`` bool: the shape filling its box. An ellipse takes the pixels whose centre lies inside it
    plus those on its two axes, so thin ellipses keep their tips and the bounding box is exactly the box."""
    if shape == "rectangle":
        return np.ones((height, width), bool)
    dy = np.abs(np.arange(height) + 0.5 - height / 2)[:, None]
    dx = np.abs(np.arange(width) + 0.5 - width / 2)[None, :]
    return ((dy / (height / 2)) ** 2 + (dx / (width / 2)) ** 2 <= 1.0) | (dy <= 0.5) | (dx <= 0.5)


def _inner_distance(mask: np.ndarray) -> np.ndarray:
    """``(H, W)`` float32: each pixel's distance to the nearest pixel off the mask, the image border included."""
    padded = np.pad(mask.astype(np.uint8), 1)
    return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


def sample_regions(
    foreground: np.ndarray,
    count: int,
    size: Sequence[float] = (0.05, 0.2),
    aspect: Sequence[float] = (0.5, 2.0),
    shape: str = "ellipse",
    seed: int | Sequence[int] = 0,
    max_tries: int = 1000,
) -> list[np.ndarray]:
    """``count`` masks ``(H, W)`` bool, each one ellipse or rectangle lying wholly inside ``foreground`` ``(H, W)``.

    size: the region's side, ``sqrt(width * height)`` of its bounding box, as a fraction of the image's shorter
    side, drawn uniformly in ``(min, max)``. aspect: ``width / height``, drawn log-uniformly in ``(min, max)`` so
    ``(0.5, 2)`` is as often wide as tall. Each region is placed uniformly among the positions where it fits;
    when the foreground is tight, sizes that fit more easily come up more often. Regions may overlap one another.
    seed: anything ``numpy.random.default_rng`` takes, e.g. ``(seed, image_index)``; the same seed gives the
    same regions. max_tries: draws of (size, aspect, position) per region before giving up.
    """
    foreground = as_mask(foreground)
    count = _check_int(count, "count", 0)
    s_lo, s_hi = _check_range(size, "size", 0.0, 1.0)
    a_lo, a_hi = _check_range(aspect, "aspect", 0.0, math.inf)
    if shape not in SHAPES:
        raise ValueError(f"unknown region shape {shape!r}; use one of {', '.join(SHAPES)}")
    max_tries = _check_int(max_tries, "max_tries", 1)
    if not foreground.any():
        raise ValueError(
            "the foreground is empty, so there is nowhere to put a region; lower the threshold or erode less, "
            "or pass a foreground mask that covers the object"
        )
    height, width = foreground.shape
    side = min(height, width)
    distance = _inner_distance(foreground)
    widest = 2.0 * float(distance.max())
    narrowest = s_lo * side / math.sqrt(max(a_hi, 1.0 / a_lo))
    if narrowest > widest + 2 * _SLACK + 1:  # + 1: rounding the region to whole pixels may narrow it by 0.5
        raise ValueError(
            f"the foreground is too small: its widest part is about {widest:.0f} px across, but the smallest "
            f"region allowed (size {s_lo:.3g} of {side} px at aspect {a_lo:.3g}..{a_hi:.3g}) is {narrowest:.0f} px "
            "across; lower the minimum size, widen the aspect range, erode less or lower the threshold"
        )
    rng = np.random.default_rng(seed)
    regions = []
    for index in range(count):
        region = _place(foreground, distance, rng, (s_lo, s_hi), (a_lo, a_hi), shape, max_tries)
        if region is None:
            raise ValueError(
                f"found no place for region {index + 1} of {count} in {max_tries} tries: the foreground (widest "
                f"part about {widest:.0f} px) leaves little room for {shape}s of size {s_lo:.3g}..{s_hi:.3g} of "
                f"{side} px; lower the sizes, erode less, or raise max_tries"
            )
        regions.append(region)
    return regions


def _place(
    foreground: np.ndarray,
    distance: np.ndarray,
    rng: np.random.Generator,
    size: tuple[float, float],
    aspect: tuple[float, float],
    shape: str,
    max_tries: int,
) -> np.ndarray | None:
    """One region inside ``foreground``, or None after ``max_tries`` failed draws."""
    img_h, img_w = foreground.shape
    side = min(img_h, img_w)
    for _ in range(max_tries):
        s = rng.uniform(*size) * side
        a = math.exp(rng.uniform(math.log(aspect[0]), math.log(aspect[1])))
        w, h = max(1, round(s * math.sqrt(a))), max(1, round(s / math.sqrt(a)))
        if w > img_w or h > img_h:
            continue
        # A region's centre must be at least half its narrow side from the edge: a cheap filter before the exact test.
        centres = distance[h // 2 : img_h - h + h // 2 + 1, w // 2 : img_w - w + w // 2 + 1]
        candidates = np.flatnonzero(centres >= min(w, h) / 2 - _SLACK)
        if candidates.size == 0:
            continue
        top, left = divmod(int(candidates[rng.integers(candidates.size)]), centres.shape[1])
        template = _template(h, w, shape)
        if foreground[top : top + h, left : left + w][template].all():
            region = np.zeros_like(foreground)
            region[top : top + h, left : left + w] = template
            return region
    return None


def feather(mask: np.ndarray, pixels: int) -> np.ndarray:
    """``(H, W)`` float32 in [0, 1]: ``mask`` with its edge ramped down over ``pixels`` pixels, inwards only,
    so the soft mask is 0 wherever the hard one is; ``pixels=0`` returns the mask as 0/1 floats."""
    mask = as_mask(mask, "mask")
    pixels = _check_int(pixels, "pixels", 0)
    if pixels == 0:
        return mask.astype(np.float32)
    return np.clip(_inner_distance(mask) / pixels, 0.0, 1.0).astype(np.float32)


def preview(image: np.ndarray, foreground: np.ndarray, regions: Sequence[np.ndarray]) -> np.ndarray:
    """``(H, W, 3)`` float32: ``image`` with each region tinted (colours cycle through ``PALETTE``) and the
    foreground outlined in green, to check where the defects will go."""
    out = as_float_image(image)
    foreground = as_mask(foreground)
    if foreground.shape != out.shape[:2]:
        raise ValueError(f"foreground must have the image's size {out.shape[:2]}, got shape {foreground.shape}")
    for index, region in enumerate(regions):
        out = overlay(out, as_mask(region, "region"), PALETTE[index % len(PALETTE)], alpha=0.45)
    contours, _ = cv2.findContours(foreground.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, OUTLINE, max(1, round(min(out.shape[:2]) / 256)))
    return out


__all__ = ["OUTLINE", "PALETTE", "SHAPES", "as_mask", "feather", "foreground_mask", "preview", "sample_regions"]
