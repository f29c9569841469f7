"""A photo's own pixels, kept as stored: 8- or 16-bit, grey or RGB. Region generation works on these so that
everything outside a defect's region is the source file's pixels, and converts only what the model sees
(``unit_rgb``) and what it made (``to_pixels``, into the photo's colour model and depth).

Pixels are numpy: ``(H, W)`` grey or ``(H, W, 3)`` RGB, ``uint8``, ``uint16`` or float in [0, 1].
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .imageio import DataError, _decode

DEPTHS = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
"""The stored integer types and their full-scale value."""


def read_pixels(path: str | os.PathLike) -> np.ndarray:
    """A photo's pixels as its file stores them: ``(H, W)`` grey or ``(H, W, 3)`` RGB, ``uint8`` or ``uint16``
    (alpha dropped, grey + alpha read as grey); a ``DataError`` naming the file for other pixel types."""
    path = Path(path)
    raw = _decode(path, "image")
    if raw.dtype not in DEPTHS:
        raise DataError(f"image {path} has pixel type {raw.dtype}; expected 8- or 16-bit grey or RGB")
    if raw.ndim == 3 and raw.shape[2] in (1, 2):
        raw = raw[..., 0]
    elif raw.ndim == 3:
        raw = raw[..., 2::-1]  # BGR(A) -> RGB
    return np.ascontiguousarray(raw)


def pixels_of(image: np.ndarray, name: str = "photo") -> np.ndarray:
    """``image`` as pixels: ``(H, W)`` or ``(H, W, 3)`` (an alpha or 1-channel axis dropped), checked."""
    x = np.asarray(image)
    if x.ndim == 3 and x.shape[2] == 1:
        x = x[..., 0]
    elif x.ndim == 3 and x.shape[2] >= 3:
        x = x[..., :3]
    if x.ndim not in (2, 3) or 0 in x.shape[:2]:
        raise ValueError(f"{name} must be an (H, W) grey or (H, W, 3) RGB image, got shape {np.asarray(image).shape}")
    if x.dtype not in DEPTHS and not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name} must be uint8, uint16 or float in [0, 1], got dtype {x.dtype}")
    return x


def unit(pixels: np.ndarray) -> np.ndarray:
    """float32 in [0, 1], same shape (the colour model kept)."""
    scale = DEPTHS.get(pixels.dtype)
    if scale is not None:
        return pixels.astype(np.float32) / np.float32(scale)
    return np.clip(pixels.astype(np.float32), 0.0, 1.0)


def unit_rgb(image: np.ndarray, name: str = "photo") -> np.ndarray:
    """``(H, W, 3)`` float32 RGB in [0, 1], what the model sees: grey repeated, 16-bit scaled."""
    x = unit(pixels_of(image, name))
    return np.ascontiguousarray(np.repeat(x[..., None], 3, axis=2)) if x.ndim == 2 else x


def from_unit(values: np.ndarray, like: np.ndarray) -> np.ndarray:
    """float values in [0, 1] in ``like``'s depth: rounded to 8 or 16 bit, or float of ``like``'s type."""
    scale = DEPTHS.get(like.dtype)
    if scale is None:
        return np.clip(values, 0.0, 1.0).astype(like.dtype)
    return np.round(np.clip(values, 0.0, 1.0) * scale).astype(like.dtype)


def to_model(rgb: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] in ``like``'s colour model, still float: luminance (OpenCV's RGB2GRAY, ITU-R BT.601)
    for a grey ``like``, RGB otherwise."""
    rgb = np.ascontiguousarray(rgb, dtype=np.float32)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if like.ndim == 2 else rgb


def to_pixels(rgb: np.ndarray, like: np.ndarray) -> np.ndarray:
    """A generated float RGB image in ``like``'s colour model and depth (``to_model``, then ``from_unit``)."""
    return from_unit(to_model(rgb, like), like)


__all__ = ["DEPTHS", "from_unit", "pixels_of", "read_pixels", "to_model", "to_pixels", "unit", "unit_rgb"]
