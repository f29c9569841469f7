"""Region control's last step: put the generated region back into the source photo in pixel space.

Outside the region dilated by ``feather`` pixels the weight is exactly 0, so the result there is the source,
bit for bit; inside it ramps to 1 over ``feather`` pixels (a Gaussian with a finite kernel, so it cannot leak).
"""

from __future__ import annotations

import cv2
import numpy as np


def feather_weights(region: np.ndarray, feather: int) -> np.ndarray:
    """(H, W) float32 in [0, 1]: 1 well inside ``region``, 0 beyond ``feather`` pixels outside it."""
    if feather < 0:
        raise ValueError(f"feather must be >= 0 pixels, got {feather}")
    hard = (np.asarray(region) > 0.5).astype(np.float32)
    if feather == 0:
        return hard
    size = 2 * feather + 1
    soft = cv2.GaussianBlur(hard, (size, size), sigmaX=feather / 2, borderType=cv2.BORDER_REPLICATE)
    reach = cv2.dilate(hard, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size)))
    return np.where(reach > 0, np.maximum(soft, hard), 0.0).astype(np.float32)


def composite(generated: np.ndarray, source: np.ndarray, region: np.ndarray, feather: int = 4) -> np.ndarray:
    """(H, W, C) images in the same range: ``source`` everywhere but the (feathered) region."""
    if generated.shape != source.shape:
        raise ValueError(f"generated image {generated.shape} and source {source.shape} must have the same size")
    if region.shape != generated.shape[:2]:
        raise ValueError(f"region {region.shape} must match the image size {generated.shape[:2]}")
    w = feather_weights(region, feather)[..., None]
    out = source * (1 - w) + generated * w
    return np.where(w > 0, out, source).astype(source.dtype)


def clip_mask(mask: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The defect mask restricted to the region the defect was allowed in."""
    return np.logical_and(np.asarray(mask) > 0.5, np.asarray(region) > 0.5)
