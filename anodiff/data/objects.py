"""The object in a photo: its U²-Net-P saliency, cached beside the data, and the photo with the object blacked out.

``blackened_background`` is the one blackout of BCM: training sets, ``anodiff generate`` and the ComfyUI node all
call it (dualanodiff-reference.md §5.1: a soft alpha, no threshold).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..common.imageio import DataError, as_float_image, read_image, read_mask, write_png
from .masks import U2NetP

log = logging.getLogger(__name__)

CACHE_FOLDER = ".anodiff_cache"


def object_mask_path(image_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where ``object_mask`` caches the map: ``<cache_dir>/<image folder name>/<stem>.png``, with ``cache_dir``
    defaulting to ``<image folder>/../.anodiff_cache/object_masks``. The folder name keeps anomaly types that
    share MVTec's ``test/`` (``crack/000.png``, ``hole/000.png``) apart."""
    image_path = Path(image_path)
    base = Path(cache_dir) if cache_dir is not None else image_path.parent.parent / CACHE_FOLDER / "object_masks"
    return base / image_path.parent.name / f"{image_path.stem}.png"


def _object_mask(
    image_path: Path, image: np.ndarray, cache_dir: str | os.PathLike | None, model: Callable[[], U2NetP]
) -> np.ndarray:
    cache = object_mask_path(image_path, cache_dir)
    if cache.is_file() and cache.stat().st_mtime_ns >= image_path.stat().st_mtime_ns:
        try:
            cached = read_mask(cache)
        except DataError:
            cached = None
        if cached is not None and cached.shape == image.shape[:2]:
            return cached
        log.info("recomputing the unreadable or mis-sized object mask %s", cache)
    grey = np.round(model().saliency(image) * 255.0).astype(np.uint8)
    try:
        write_png(cache, grey)  # atomic, so a parallel run never reads half a file
    except OSError as err:
        log.warning("cannot cache the object mask of %s in %s (%s); it is recomputed next run", image_path, cache, err)
    return grey.astype(np.float32) / 255.0


def object_mask(
    image_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None, model: U2NetP | None = None
) -> np.ndarray:
    """``(H, W)`` float32 in [0, 1]: the U²-Net-P saliency of the image's object (§5.1), stored as an 8-bit PNG
    at ``object_mask_path`` and reused while it is newer than the image. The returned map is the 8-bit one even
    on the first run, so the first and later runs train on identical backgrounds."""
    image_path = Path(image_path)
    return _object_mask(image_path, read_image(image_path), cache_dir, lambda: model if model is not None else U2NetP())


def blackened_background(image: np.ndarray, object_mask: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` float32 ``image * (1 - object_mask)``: the authors paste the image onto black through the
    inverted saliency as a soft alpha, no threshold (§5.1). image: uint8 or float [0, 1]; object_mask: ``(H, W)``."""
    x = as_float_image(image)
    alpha = np.asarray(object_mask, dtype=np.float32)
    if alpha.shape != x.shape[:2]:
        raise ValueError(f"object_mask must have the image's size {x.shape[:2]}, got shape {alpha.shape}")
    return x * (1.0 - np.clip(alpha, 0.0, 1.0))[..., None]


def background_image(
    image_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None, model: U2NetP | None = None
) -> np.ndarray:
    """``(H, W, 3)`` float32 RGB in [0, 1]: the image with its object blacked out, e.g. a ``normal_images`` file
    as a BCM background at generation time (§5.4); the saliency is cached as in ``object_mask``."""
    image_path = Path(image_path)
    image = read_image(image_path)
    alpha = _object_mask(image_path, image, cache_dir, lambda: model if model is not None else U2NetP())
    return blackened_background(image, alpha)
