"""Crop-and-stitch: put a defect into a photo of any size and aspect at SD1.5's working resolution.

SD1.5 degrades far from 512 px, and squashing a 1600x1200 photo to 512x512 makes the "exact" background exact
only on a distorted copy. Instead a context window shaped like the region (its bounding box times ``context`` per
axis, clamped to the photo; ``crop_window``) is cut out and resized to the working size keeping its aspect; the pair
is generated there with the region held, and ``stitch`` pastes the result back at the photo's full resolution.
Outside the region grown by the feather the output is the ORIGINAL photo's bytes; the mask comes back at the
photo's size, clipped to the region. ``blend="poisson"`` uses OpenCV's seamlessClone inside the same grown region.

Arrays are numpy: photos ``(H, W)`` grey or ``(H, W, 3)`` RGB, 8-bit, 16-bit or float in [0, 1], kept in their
channels and depth (the model's crop is float RGB, its result converted back: ``anodiff.common.pixels``); masks
``(H, W)``. No torch, no ComfyUI.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from ..common.imageio import resize
from ..common.pixels import from_unit, pixels_of, to_model, unit, unit_rgb
from .composite import feather_weights

log = logging.getLogger(__name__)

BLENDS = ("feather", "poisson")
MULTIPLE = 64
"""Working sides are multiples of this: 8 latent pixels, SD1.5's deepest level (scaled down for tiny working sizes)."""
MAX_UPSCALE = 4.0
"""A small region's window is enlarged at most this much (more context instead of a blurry 8x crop)."""


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


def _place(start: int, side: int, box: int, extent: int) -> int:
    """The window's first pixel: centred on the box, then shifted to stay inside the photo."""
    centred = start + box // 2 - side // 2
    return int(min(max(centred, 0), extent - side))


def _scale(
    box: tuple[int, int], need: tuple[float, float], photo: tuple[int, int], working: int, limits: tuple[int, int, int]
) -> float:
    """Working pixels per photo pixel: the context window's longer side at ``working`` and a photo's short side at
    least ``min_side`` (each enlarging at most ``MAX_UPSCALE`` times), raised until the region's short side reaches
    ``min_defect``, lowered until the region's long side fits ``max_side``."""
    min_side, min_defect, max_side = limits
    s = min(max(working / max(need), min_side / min(photo)), MAX_UPSCALE)
    s = max(s, min_defect / min(box))
    return min(s, max_side / max(box))


def crop_window(
    region: np.ndarray,
    context: float = 2.0,
    working: int = 512,
    multiple: int = MULTIPLE,
    name: str = "region",
    min_side: int | None = None,
    min_defect: int | None = None,
    max_side: int | None = None,
) -> Window:
    """The window to generate the region's pair in, shaped like the region.

    Per axis, the window is ``context`` times the region box's side (so a long scratch gets a long window, not a
    square), at a scale that puts the window's longer side at ``working`` pixels but enlarges the photo at most
    ``MAX_UPSCALE`` times, shows the region's short side with at least ``min_defect`` working pixels (default
    ``working / 16``: 4 latent pixels at 512), and keeps the region within ``max_side`` (default ``3 * working``).
    Each working side is at least ``min_side`` (default ``working / 2``; more context, not a stretched crop), the
    longer one at least ``working``, and a multiple of ``multiple`` pixels (64: 8 latent pixels of SD1.5; below a
    working size of 512, ``working / 8``); the photo window has the same aspect up to that rounding, clamped to
    the photo. A warning names the region (``name``) when its defect would still be under ``min_defect``."""
    if not (isinstance(context, (int, float)) and not isinstance(context, bool) and context >= 1.0):
        raise ValueError(f"context must be a number >= 1 (the window is the region's box times it), got {context!r}")
    if isinstance(working, bool) or not isinstance(working, int) or working < 8 or working % 8:
        raise ValueError(f"working size must be a positive multiple of 8, got {working!r}")
    height, width = np.asarray(region).shape[:2]
    x, y, w, h = region_box(region, name)
    step = min(multiple, max(8, working // 8))
    limits = (
        working // 2 if min_side is None else min_side,
        max(1, working // 16) if min_defect is None else min_defect,
        3 * working if max_side is None else max_side,
    )
    need = (min(w * float(context), width), min(h * float(context), height))  # no more context than the photo has
    s = _scale((w, h), need, (width, height), working, limits)
    sides, works = [], []
    for extent, box, wanted in ((width, w, need[0]), (height, h, need[1])):
        target = max(wanted * s, limits[0], working if wanted == max(need) else 0)
        target = max(min(target, limits[2]), box * s)
        side = min(max(box, round(math.ceil(target / step) * step / s)), extent)
        sides.append(side)
        works.append(max(step, round(side * s / step) * step))
    defect = min(w * works[0] / sides[0], h * works[1] / sides[1])
    if defect < limits[1]:
        log.warning(
            "%s: the defect would be %.1f px (%.1f latent px) across at the working size, under the minimum "
            "%d px; split it into shorter regions, draw it thicker, or raise the working size",
            name,
            defect,
            defect / 8,
            limits[1],
        )
    return Window(
        _place(x, sides[0], w, width),
        _place(y, sides[1], h, height),
        sides[0],
        sides[1],
        works[0],
        works[1],
        width,
        height,
    )


def shared_windows(
    regions: list[np.ndarray], context: float = 2.0, working: int = 512, names: list[str] | None = None
) -> list[Window]:
    """One window per region (all of one photo size) with one working shape, for a batch that must share it: each
    region's own window when those agree, else windows around boxes of the largest width and height, each centred
    on its region's box and kept inside the photo (same box, same photo size: same window shape)."""
    names = names or [f"region {k + 1}" for k in range(len(regions))]
    windows = [crop_window(r, context, working, name=n) for r, n in zip(regions, names)]
    if len({w.work_shape for w in windows}) <= 1:
        return windows
    boxes = [region_box(r, n) for r, n in zip(regions, names)]
    bw, bh = max(b[2] for b in boxes), max(b[3] for b in boxes)
    out = []
    for region, (x, y, w, h), name in zip(regions, boxes, names):
        height, width = np.asarray(region).shape[:2]
        common = np.zeros((height, width), bool)
        left, top = _place(x, bw, w, width), _place(y, bh, h, height)
        common[top : top + bh, left : left + bw] = True
        out.append(crop_window(common, context, working, name=name))
    return out


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """To ``(width, height)``: area when shrinking (no aliasing), cubic when enlarging, unchanged when equal."""
    return resize(image, size[1], size[0], enlarge=cv2.INTER_CUBIC)


def as_unit(photo: np.ndarray, name: str = "photo") -> np.ndarray:
    """``(H, W, 3)`` float32 RGB in [0, 1] from grey or RGB, 8-bit, 16-bit or float (``common.pixels.unit_rgb``)."""
    return unit_rgb(photo, name)


def crop(photo: np.ndarray, region: np.ndarray, window: Window) -> tuple[np.ndarray, np.ndarray]:
    """The window of ``photo`` at the working size as the model sees it (float32 RGB in [0, 1], whatever the photo's
    depth and channels) and of ``region`` (bool; a region pixel anywhere under a working pixel keeps it, so a thin
    region never vanishes when shrunk)."""
    _check_sizes(photo, region, window)
    x, y, w, h = window.box
    size = (window.work_width, window.work_height)
    image = _resize(unit_rgb(pixels_of(photo)[y : y + h, x : x + w]), size)
    zone = (np.asarray(region)[y : y + h, x : x + w] > 0.5).astype(np.float32)
    return np.clip(image, 0.0, 1.0), _resize(zone, size) > 0


def _check_sizes(photo: np.ndarray, region: np.ndarray, window: Window) -> None:
    shape = (window.photo_height, window.photo_width)
    if np.asarray(photo).shape[:2] != shape or np.asarray(region).shape[:2] != shape:
        raise ValueError(
            f"photo {np.asarray(photo).shape[:2]} and region {np.asarray(region).shape[:2]} must both "
            f"have the size the crop window was made for, {shape}"
        )


def _poisson(generated: np.ndarray, background: np.ndarray, grown: np.ndarray) -> np.ndarray:
    """seamlessClone of ``generated`` into ``background`` (both the window in the photo's colour model, float in
    [0, 1]) inside ``grown``, as float. OpenCV clones 8-bit colour only: the clone's change to the 8-bit background
    is added to the full-depth one, so the seam keeps the photo's depth. Padded so a region at the window's edge
    still has a border for the solver."""
    pad = 8

    def eight_bit(x: np.ndarray) -> np.ndarray:
        x = np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)
        x = np.repeat(x[..., None], 3, axis=2) if x.ndim == 2 else x
        return cv2.copyMakeBorder(x, pad, pad, pad, pad, cv2.BORDER_REFLECT)

    src, dst = eight_bit(generated), eight_bit(background)
    mask = cv2.copyMakeBorder(grown.astype(np.uint8) * 255, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    x, y, w, h = cv2.boundingRect(mask)
    cloned = cv2.seamlessClone(src, dst, mask, (x + w // 2, y + h // 2), cv2.NORMAL_CLONE)
    change = (cloned.astype(np.float32) - dst.astype(np.float32))[pad:-pad, pad:-pad] / 255.0
    return background + (change[..., 0] if background.ndim == 2 else change)


def stitch(
    photo: np.ndarray,
    generated: np.ndarray,
    region: np.ndarray,
    window: Window,
    mask: np.ndarray | None = None,
    feather: int = 4,
    blend: str = "feather",
) -> tuple[np.ndarray, np.ndarray]:
    """``(image, mask)`` at the photo's full size: ``generated`` (the window at the working size, float RGB in
    [0, 1]) resized back, converted to the photo's colour model (luminance for a grey photo) and pasted into
    ``photo`` inside the region grown by ``feather`` px, feathered or Poisson-blended, in the photo's depth;
    elsewhere the photo's own pixels. The image has the photo's channels and dtype (8/16-bit or float, grey or
    RGB). ``mask`` (working size) comes back clipped to the region; without one it is the region."""
    if blend not in BLENDS:
        raise ValueError(f"blend must be one of {', '.join(BLENDS)}, got {blend!r}")
    _check_sizes(photo, region, window)
    generated = unit_rgb(generated, "generated")
    if generated.shape[:2] != window.work_shape:
        raise ValueError(
            f"generated image {generated.shape[:2]} must have the window's working size {window.work_shape}"
        )
    photo = pixels_of(photo)
    x, y, w, h = window.box
    zone = np.asarray(region) > 0.5
    source = photo[y : y + h, x : x + w]
    back = to_model(np.clip(_resize(generated, (w, h)), 0.0, 1.0), source)
    weight = feather_weights(zone[y : y + h, x : x + w], feather)
    weight = weight[..., None] if source.ndim == 3 else weight
    if blend == "feather":
        pasted = unit(source) * (1.0 - weight) + back * weight
    else:
        pasted = _poisson(back, unit(source), weight[..., 0] > 0 if source.ndim == 3 else weight > 0)
    out = photo.copy()
    out[y : y + h, x : x + w] = np.where(weight > 0, from_unit(pasted, source), source)
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
    "shared_windows",
    "stitch",
    "stitch_mask",
]
