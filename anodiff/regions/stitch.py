"""Crop-and-stitch: put a defect into a photo of any size and aspect at SD1.5's working resolution.

SD1.5 degrades far from 512 px, and squashing a 1600x1200 photo to 512x512 makes the "exact" background exact
only on a distorted copy. Instead a context window around the region (its bounding box times ``context``, snapped
to multiples of 64, clamped to the photo) is cut out and resized to the working size keeping its aspect; the pair
is generated there with the region held, and ``stitch`` pastes the result back at the photo's full resolution.
Outside the region grown by the feather the output is the ORIGINAL photo's bytes; the mask comes back at the
photo's size, clipped to the region. ``blend="poisson"`` uses OpenCV's seamlessClone inside the same grown region.

Arrays are numpy: photos ``(H, W, 3)`` uint8 or float in [0, 1], masks ``(H, W)``. No torch, no ComfyUI.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from ..common.imageio import resize
from .composite import feather_weights

BLENDS = ("feather", "poisson")
MULTIPLE = 64
"""Window sides are multiples of this (whole latent blocks of SD1.5's deepest level at any working size)."""


@dataclass(frozen=True)
class Window:
    """Where a crop came from: ``x, y, width, height`` in photo pixels, the working size it was resized to, and
    the photo's size (so a STITCH object or a sidecar alone is enough to paste back or regenerate)."""

    x: int
    y: int
    width: int
    height: int
    work_width: int
    work_height: int
    photo_width: int
    photo_height: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.width, self.height

    @property
    def work_shape(self) -> tuple[int, int]:
        """``(height, width)`` at the working resolution."""
        return self.work_height, self.work_width

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Window:
        try:
            return cls(**{k: int(data[k]) for k in cls.__dataclass_fields__})
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"not a crop window record ({exc}); expected keys {', '.join(cls.__dataclass_fields__)}"
            ) from exc


def region_box(region: np.ndarray, name: str = "region") -> tuple[int, int, int, int]:
    """``(x, y, width, height)`` of the region's bounding box; an empty region is an error."""
    mask = np.asarray(region)
    if mask.ndim != 2:
        raise ValueError(f"{name} must be an (H, W) mask, got shape {mask.shape}")
    points = cv2.findNonZero((mask > 0.5).astype(np.uint8))
    if points is None:
        raise ValueError(f"{name} is empty: paint where the defect may go in white")
    x, y, w, h = cv2.boundingRect(points)
    return int(x), int(y), int(w), int(h)


def _window_side(need: float, extent: int, box: int, multiple: int) -> int:
    """The window's side along one axis: ``need`` rounded up to ``multiple``, clamped to the photo's largest
    multiple; the whole side when the region itself is wider than that (the only non-multiple case)."""
    largest = extent // multiple * multiple
    if largest < max(box, 1) or largest == 0:
        return extent
    return min(max(multiple, math.ceil(need / multiple) * multiple), largest)


def _place(start: int, side: int, box: int, extent: int) -> int:
    """The window's first pixel: centred on the box, then shifted to stay inside the photo."""
    centred = start + box // 2 - side // 2
    return int(min(max(centred, 0), extent - side))


def crop_window(region: np.ndarray, context: float = 2.0, working: int = 512, multiple: int = MULTIPLE) -> Window:
    """The window to generate the region's pair in: a square of ``context`` times the region box's longer side
    (so the model sees the part around the defect), snapped up to ``multiple``, clamped to the photo and kept
    inside it; its working size has the longer side ``working`` and the other scaled alike, to a multiple of 8."""
    if not (isinstance(context, (int, float)) and not isinstance(context, bool) and context >= 1.0):
        raise ValueError(f"context must be a number >= 1 (the window is the region's box times it), got {context!r}")
    if isinstance(working, bool) or not isinstance(working, int) or working < 8 or working % 8:
        raise ValueError(f"working size must be a positive multiple of 8, got {working!r}")
    height, width = np.asarray(region).shape[:2]
    x, y, w, h = region_box(region)
    need = max(w, h) * float(context)
    win_w = _window_side(need, width, w, multiple)
    win_h = _window_side(need, height, h, multiple)
    scale = working / max(win_w, win_h)
    work_w = max(8, round(win_w * scale / 8) * 8)
    work_h = max(8, round(win_h * scale / 8) * 8)
    return Window(_place(x, win_w, w, width), _place(y, win_h, h, height), win_w, win_h, work_w, work_h, width, height)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """To ``(width, height)``: area when shrinking (no aliasing), cubic when enlarging, unchanged when equal."""
    return resize(image, size[1], size[0], enlarge=cv2.INTER_CUBIC)


def as_unit(photo: np.ndarray, name: str = "photo") -> np.ndarray:
    """``(H, W, 3)`` float32 in [0, 1] from uint8 or float RGB."""
    photo = np.asarray(photo)
    if photo.ndim != 3 or photo.shape[2] < 3:
        raise ValueError(f"{name} must be an (H, W, 3) RGB image, got shape {photo.shape}")
    photo = photo[..., :3]
    if photo.dtype == np.uint8:
        return photo.astype(np.float32) / 255.0
    return np.clip(photo.astype(np.float32), 0.0, 1.0)


def crop(photo: np.ndarray, region: np.ndarray, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """The window of ``photo`` at the working size (float32 in [0, 1]) and of ``region`` (bool; a region pixel
    anywhere under a working pixel keeps it, so a thin region never vanishes when shrunk)."""
    _check_sizes(photo, region, window)
    x, y, w, h = window.box
    size = (window.work_width, window.work_height)
    image = _resize(np.ascontiguousarray(as_unit(photo)[y : y + h, x : x + w]), size)
    zone = (np.asarray(region)[y : y + h, x : x + w] > 0.5).astype(np.float32)
    return np.clip(image, 0.0, 1.0), _resize(zone, size) > 0


def _check_sizes(photo: np.ndarray, region: np.ndarray, window: Window) -> None:
    shape = (window.photo_height, window.photo_width)
    if np.asarray(photo).shape[:2] != shape or np.asarray(region).shape[:2] != shape:
        raise ValueError(f"photo {np.asarray(photo).shape[:2]} and region {np.asarray(region).shape[:2]} must both "
                         f"have the size the crop window was made for, {shape}")  # fmt: skip


def _to_dtype(unit: np.ndarray, like: np.ndarray) -> np.ndarray:
    if like.dtype == np.uint8:
        return np.round(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8)
    return unit.astype(like.dtype)


def _poisson(generated: np.ndarray, background: np.ndarray, grown: np.ndarray) -> np.ndarray:
    """seamlessClone of ``generated`` into ``background`` (both the window, uint8) inside ``grown``; padded so a
    region at the window's edge still has a border for the solver."""
    pad = 8
    src = cv2.copyMakeBorder(generated, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    dst = cv2.copyMakeBorder(background, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    mask = cv2.copyMakeBorder(grown.astype(np.uint8) * 255, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    x, y, w, h = cv2.boundingRect(mask)
    cloned = cv2.seamlessClone(src, dst, mask, (x + w // 2, y + h // 2), cv2.NORMAL_CLONE)
    return cloned[pad:-pad, pad:-pad]


def stitch(
    photo: np.ndarray,
    generated: np.ndarray,
    region: np.ndarray,
    window: Window,
    mask: np.ndarray | None = None,
    feather: int = 4,
    blend: str = "feather",
) -> tuple[np.ndarray, np.ndarray]:
    """``(image, mask)`` at the photo's full size: ``generated`` (the window at the working size, float in
    [0, 1]) resized back and pasted into ``photo`` inside the region grown by ``feather`` px, feathered or
    Poisson-blended; elsewhere the photo's own values (same dtype). ``mask`` (working size) comes back clipped to
    the region; without one it is the region."""
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {', '.join(BLENDS)}, got {blend!r}")
    _check_sizes(photo, region, window)
    generated = as_unit(generated, "generated")
    if generated.shape[:2] != window.work_shape:
        raise ValueError(
            f"generated image {generated.shape[:2]} must have the window's working size {window.work_shape}"
        )
    photo = np.asarray(photo)[..., :3]
    x, y, w, h = window.box
    zone = np.asarray(region) > 0.5
    zone_win = zone[y : y + h, x : x + w]
    source = photo[y : y + h, x : x + w]
    back = np.clip(_resize(generated, (w, h)), 0.0, 1.0)
    weight = feather_weights(zone_win, feather)
    if blend == "feather":
        w3 = weight[..., None]
        pasted = _to_dtype(as_unit(source) * (1.0 - w3) + back * w3, source)
    else:
        cloned = _poisson(_to_dtype(back, np.zeros(0, np.uint8)), _to_dtype(as_unit(source), np.zeros(0, np.uint8)),
                          weight > 0)  # fmt: skip
        pasted = _to_dtype(cloned.astype(np.float32) / 255.0, source) if source.dtype != np.uint8 else cloned
    out = photo.copy()
    out[y : y + h, x : x + w] = np.where(weight[..., None] > 0, pasted, source)
    return out, zone.copy() if mask is None else stitch_mask(mask, region, window)


def stitch_mask(mask: np.ndarray, region: np.ndarray, window: Window) -> np.ndarray:
    """``(H, W)`` bool at the photo's size: a working-size defect mask put back in its window (nearest
    neighbour, so it stays hard) and clipped to the region."""
    m = (np.asarray(mask) > 0.5).astype(np.uint8)
    if m.shape != window.work_shape:
        raise ValueError(f"mask {m.shape} must have the window's working size {window.work_shape}")
    x, y, w, h = window.box
    full = np.zeros((window.photo_height, window.photo_width), bool)
    full[y : y + h, x : x + w] = cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) > 0
    return full & (np.asarray(region) > 0.5)


def grown_region(region: np.ndarray, feather: int) -> np.ndarray:
    """``(H, W)`` bool: where ``stitch`` may change the photo (the region dilated by the feather)."""
    return feather_weights(np.asarray(region) > 0.5, feather) > 0


__all__ = [
    "BLENDS",
    "MULTIPLE",
    "Window",
    "as_unit",
    "crop",
    "crop_window",
    "grown_region",
    "region_box",
    "stitch",
    "stitch_mask",
]
