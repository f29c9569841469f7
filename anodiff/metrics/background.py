"""Background preservation: how much a generated image changed its source outside the defect.

O2MAG (CVPR 2026) points out that IC-LPIPS, a diversity score, rewards a generator that corrupts the background: a
pair that repaints the whole part looks "diverse". This score measures the opposite, per pair and averaged per defect
type: PSNR and LPIPS between the generated image and its source background, both with the defect's mask dilated by
``dilate`` pixels blanked (set to black in both), at ``size`` px. The source is the photo the pair was generated into,
as its sidecar records it (region control: ``source_root``/``source``); a pair made without one (whole-image
generation) is compared with the nearest ``train/good`` image, a proxy that also counts pose and lighting changes,
and the report says how many pairs had which. Identical backgrounds give ``PSNR_CAP`` dB (PSNR is infinite there).

PSNR is computed here rather than with torchmetrics: its PSNR averages over every pixel, and the score must count
only the pixels outside the dilated mask.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from ..common.imageio import as_float_image, read_image, resize
from ..dataset.sidecar import source_photo

log = logging.getLogger(__name__)

PSNR_CAP = 100.0
"""dB reported for a background identical to its source (mean squared error 0)."""
DILATE = 5
"""Default dilation of the mask, in pixels at the working size (256 px): the resampling and the blend's feather
reach a few pixels past the mask."""


def outside(mask: np.ndarray, dilate: int) -> np.ndarray:
    """``(H, W)`` bool: the pixels farther than ``dilate`` pixels (8-connected) from the mask."""
    if dilate < 0:
        raise ValueError(f"dilate must be >= 0 pixels, got {dilate}")
    grown = mask.astype(np.uint8)
    if dilate:
        grown = cv2.dilate(grown, np.ones((2 * dilate + 1, 2 * dilate + 1), np.uint8))
    return grown == 0


def background_psnr(generated: np.ndarray, source: np.ndarray, keep: np.ndarray) -> float:
    """PSNR in dB (peak 1) over the ``keep`` pixels of two ``(H, W, 3)`` images in [0, 1]; NaN when none is kept."""
    if generated.shape != source.shape or keep.shape != generated.shape[:2]:
        raise ValueError(f"shapes differ: generated {generated.shape}, source {source.shape}, mask {keep.shape}")
    if not keep.any():
        return float("nan")
    mse = float(np.mean((generated[keep].astype(np.float64) - source[keep].astype(np.float64)) ** 2))
    return PSNR_CAP if mse == 0.0 else min(PSNR_CAP, 10.0 * math.log10(1.0 / mse))


def background_row(
    pairs: Sequence,
    mask_of: Callable[[Path], np.ndarray],
    nearest: Callable[[np.ndarray], np.ndarray] | None,
    lpips: object | None = None,
    dilate: int = DILATE,
    size: int = 256,
) -> dict[str, float | int]:
    """Per-type means: ``background_psnr`` (dB), ``background_lpips`` (with an LPIPS network) and how many pairs
    were compared with their source photo (``background_from_source``) or with the nearest normal image.

    pairs: objects with ``image`` and ``mask`` paths; mask_of: a mask path -> ``(size, size)`` bool mask;
    nearest: a ``(size, size, 3)`` image -> the nearest normal image at that size (None: pairs without a source
    photo are skipped)."""
    psnrs, dists, from_source, from_normal = [], [], 0, 0
    for pair in pairs:
        image = resize(read_image(pair.image), size, size)
        photo = source_photo(Path(pair.image))
        if photo is not None:
            reference, from_source = resize(read_image(photo), size, size), from_source + 1
        elif nearest is not None:
            reference, from_normal = nearest(image), from_normal + 1
        else:
            continue
        keep = outside(mask_of(pair.mask), dilate)
        psnrs.append(background_psnr(image, as_float_image(reference), keep))
        if lpips is not None:
            dists.append(_masked_lpips(lpips, image, as_float_image(reference), keep))
    row: dict[str, float | int] = {"background_from_source": from_source, "background_from_normal": from_normal}
    if psnrs:
        row["background_psnr"] = float(np.nanmean(psnrs)) if not np.isnan(psnrs).all() else float("nan")
    if dists:
        row["background_lpips"] = float(np.mean(dists))
    return row


def _masked_lpips(lpips, generated: np.ndarray, source: np.ndarray, keep: np.ndarray) -> float:
    """LPIPS between the two images with everything but ``keep`` set to black in both."""
    import torch

    from .perceptual import to_lpips_input

    a, b = (to_lpips_input(x * keep[..., None], lpips.size) for x in (generated, source))
    with torch.inference_mode():
        return float(lpips(a, b)[0])


__all__ = ["DILATE", "PSNR_CAP", "background_psnr", "background_row", "outside"]
