"""Region control's inputs checked and brought to the output size: one photo or one per pair, one region or one
per pair, so a batch may hold a different crop of a different photo in every pair (crop-and-stitch, folders)."""

from __future__ import annotations

import cv2
import numpy as np

from ..common.imageio import as_float_image


def region_mask(region: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W) bool at the output size (nearest neighbour, so the region is never blurred)."""
    mask = np.asarray(region, dtype=np.float32)
    if mask.ndim != 2:
        raise ValueError(f"region must be an (H, W) mask, got shape {mask.shape}")
    if mask.shape != (height, width):
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    return mask > 0.5


def _per_pair(value: object, single_ndim: int) -> list:
    array = value if isinstance(value, np.ndarray) else None
    return [value] if array is not None and array.ndim == single_ndim else list(value)


def region_inputs(source, region, num_pairs: int, height: int, width: int) -> tuple[list[np.ndarray], np.ndarray]:
    """(photos at the output size: one for all pairs or one per pair, (N, H, W) bool regions).

    source: one (H, W, 3) photo, or one per pair (a list or an (N, H, W, 3) array). region: one (H, W) mask for
    all pairs, or one per pair (a list, or an (N, H, W) array)."""
    if source is None or region is None:
        raise ValueError("region control needs both a source photo and a region mask")
    photos = []
    for k, image in enumerate(_per_pair(source, 3)):
        photo = as_float_image(np.asarray(image), "source" if k == 0 else f"source[{k}]")
        if photo.shape[:2] != (height, width):
            photo = cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)
        photos.append(photo)
    if len(photos) not in (1, num_pairs):
        raise ValueError(f"source: give one photo for all pairs or one per pair ({num_pairs}), got {len(photos)}")
    regions = _per_pair(region, 2)
    if len(regions) not in (1, num_pairs):
        raise ValueError(f"region: give one mask for all pairs or one per pair ({num_pairs}), got {len(regions)}")
    masks = np.stack([region_mask(r, height, width) for r in regions])
    for k, mask in enumerate(masks):
        if not mask.any():
            which = "region" if len(masks) == 1 else f"the region of pair {k}"
            raise ValueError(f"{which} is empty: draw where the defect may go (white)")
    return photos, np.broadcast_to(masks, (num_pairs, height, width))
