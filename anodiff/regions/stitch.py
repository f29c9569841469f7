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

import cv2
import numpy as np

from ..common.imageio import resize
from ..common.pixels import from_unit, pixels_of, to_model, unit, unit_rgb
from .composite import feather_weights
from .window import MULTIPLE, Window, crop_window, region_box, shared_windows

BLENDS = ("feather", "poisson")


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
