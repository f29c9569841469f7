"""Image files, the one place that reads and writes them: listing, decoding to float RGB in [0, 1], checking an
in-memory image, and atomic PNG writes (a crash never leaves half a file)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from .files import write_atomic

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_RANGE_TOLERANCE = 1e-3


class DataError(ValueError):
    """Training data that cannot be used, with the offending file or folder named."""


def as_float_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    """``(H, W, 3)`` float32 in [0, 1] from a ``uint8`` or float RGB image; raises on anything else.

    Float values a rounding error outside [0, 1] (VAE decodes) are clipped; values further out are an error,
    because they usually mean a [-1, 1] image was passed.
    """
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy array (H, W, 3), got {type(image).__name__}; convert a torch tensor with "
            ".cpu().numpy() and pass one image of a batch"
        )
    if image.ndim != 3 or image.shape[2] != 3:
        hint = " (a grey image: stack it to 3 channels)" if image.ndim == 2 else ""
        hint = " (drop alpha with image[..., :3])" if image.ndim == 3 and image.shape[2] == 4 else hint
        hint = " (a batch: pass one image at a time)" if image.ndim == 4 else hint
        raise ValueError(f"{name} must be an RGB image of shape (H, W, 3), got shape {image.shape}{hint}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {image.shape})")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"{name} must be uint8 or float in [0, 1], got dtype {image.dtype}")
    out = image.astype(np.float32, copy=False)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    lo, hi = float(out.min()), float(out.max())
    if lo < -_RANGE_TOLERANCE or hi > 1.0 + _RANGE_TOLERANCE:
        raise ValueError(
            f"{name} must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; map a [-1, 1] image with (x + 1) / 2"
        )
    return np.clip(out, 0.0, 1.0)


def is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def folder_stamp(folder: Path) -> str:
    """A digest of every file's path and modification time below ``folder`` ("" when it is not a folder): changes
    when a file is added, removed or rewritten (what ComfyUI's ``IS_CHANGED`` needs to re-read a folder)."""
    import hashlib

    if not folder.is_dir():
        return ""
    stamps = sorted((str(p), p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(repr(stamps).encode()).hexdigest()


def images_in(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    images = sorted((p for p in folder.iterdir() if is_image(p)), key=lambda p: p.name)
    if not images:
        raise DataError(f"folder {folder} holds no images (expected {', '.join(IMAGE_EXTENSIONS)} files)")
    return images


def _decode(path: Path, what: str) -> np.ndarray:
    """Raw pixels as stored (cv2 order, any depth); ``np.fromfile`` + ``imdecode`` copes with non-ASCII paths."""
    try:
        raw = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except (OSError, cv2.error) as err:
        raise DataError(f"cannot read {what} {path}: {err}") from err
    if raw is None or raw.size == 0:
        raise DataError(f"cannot read {what} {path}: not a readable image file")
    return raw


def _to_unit(raw: np.ndarray, path: Path, what: str) -> np.ndarray:
    if raw.dtype == np.uint8:
        return raw.astype(np.float32) / 255.0
    if raw.dtype == np.uint16:
        return raw.astype(np.float32) / 65535.0
    if np.issubdtype(raw.dtype, np.floating) and np.isfinite(raw).all():
        return np.clip(raw.astype(np.float32), 0.0, 1.0)
    raise DataError(f"{what} {path} has pixel type {raw.dtype}; expected 8-bit, 16-bit or float in [0, 1]")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """``(H, W, 3)`` float32 RGB in [0, 1]; grey is replicated, alpha dropped, 16-bit scaled."""
    path = Path(path)
    x = _to_unit(_decode(path, "image"), path, "image")
    if x.ndim == 2 or x.shape[2] in (1, 2):
        grey = x if x.ndim == 2 else x[..., 0]
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
    return np.ascontiguousarray(x[..., 2::-1])  # BGR(A) -> RGB


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """``(H, W)`` float32 in [0, 1]; a colour mask counts its brightest channel."""
    path = Path(path)
    x = _to_unit(_decode(path, "mask"), path, "mask")
    return x if x.ndim == 2 else np.ascontiguousarray(x[..., :3].max(axis=2))


def resize(image: np.ndarray, height: int, width: int, enlarge: int = cv2.INTER_LINEAR) -> np.ndarray:
    """``image`` at ``(height, width)``: by pixel area when it shrinks (no aliasing), by ``enlarge`` otherwise; the
    same array when it already has that size."""
    if image.shape[:2] == (height, width):
        return image
    shrink = image.shape[0] * image.shape[1] > height * width
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else enlarge)


def encode_png(image: np.ndarray, name: str = "image") -> bytes:
    """PNG bytes of an ``(H, W, 3)`` RGB image (float in [0, 1], 8 or 16 bit) or an ``(H, W)`` grey one (8 or
    16 bit); integer pixels are stored as they are, float as 8 bit."""
    if image.dtype not in (np.uint8, np.uint16):
        image = np.round(as_float_image(image, name) * 255.0).astype(np.uint8)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"{name}: PNG encoding failed")
    return data.tobytes()


def write_png(path: Path, image: np.ndarray) -> None:
    """Atomic PNG write (``encode_png``, then ``write_atomic``)."""
    write_atomic(path, encode_png(image, str(path)))


def read_label(path: Path, what: str | None = None) -> np.ndarray:
    """The stored values of a label or mask image, unscaled (``uint8``/``uint16``; ``(H, W)`` for one channel):
    defect ids must not be rescaled. ``ValueError`` naming ``what`` (default: the path) when unreadable."""
    raw = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ValueError(f"{what or path}: not a readable image")
    return raw


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB; decoded from bytes so non-ASCII paths work on every OS."""
    image = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
