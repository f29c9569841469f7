"""The demo's measurements: does the anomaly branch's mask sit where the global image shows its defect?

Two masks per generated pair. The anomaly-branch mask is what DualAnoDiff hands a user: ``extract_mask`` with the
model-free ``grey`` method on the anomaly image. The global image's defect region is read off the image itself:
the defects are near-black on a brick texture that never gets darker than ``TEXTURE_MIN_LUMA``, so the region is
every pixel with luminance below ``DARK_LUMA`` (0.22), in components of at least ``MIN_AREA`` pixels. Their IoU,
compared with the IoU of mismatched pairs (the chance level), is SAIM's alignment claim in one number.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..data.masks import extract_mask, remove_small
from .data import DARK_LUMA, luminance

MIN_AREA = 3
"""Smallest component, in pixels, that counts as a defect (a thin crack at 24 px is still 5 or more)."""
MASK_THRESHOLD = 0.5
NOVELTY_IOU = 0.5


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (H, W) bool masks; two empty masks are identical, so 1.0."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = np.logical_or(a, b).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(a, b).sum() / union)


def anomaly_mask(part: np.ndarray) -> np.ndarray:
    """(H, W) bool defect mask of an anomaly-branch image (H, W, 3) in [0, 1]: the project's grey method."""
    return extract_mask(part, method="grey", threshold=MASK_THRESHOLD, min_area=MIN_AREA)


def defect_region(image: np.ndarray, threshold: float = DARK_LUMA, min_area: int = MIN_AREA) -> np.ndarray:
    """(H, W) bool: the dark pixels of a global image (H, W, 3) in [0, 1], small specks removed."""
    return remove_small(luminance(np.asarray(image, np.float32)) < threshold, min_area)


def paired_iou(first: Sequence[np.ndarray], second: Sequence[np.ndarray]) -> list[float]:
    """IoU of first[i] with second[i], for every i."""
    if len(first) != len(second):
        raise ValueError(f"need as many masks on both sides, got {len(first)} and {len(second)}")
    return [iou(a, b) for a, b in zip(first, second)]


def chance_iou(first: Sequence[np.ndarray], second: Sequence[np.ndarray]) -> float:
    """Mean IoU of first[i] with second[j] over all i != j: what alignment looks like by luck."""
    n = len(first)
    if n != len(second):
        raise ValueError(f"need as many masks on both sides, got {n} and {len(second)}")
    if n < 2:
        return float("nan")
    values = [iou(first[i], second[j]) for i in range(n) for j in range(n) if i != j]
    return float(np.mean(values))


def novelty_share(generated: Sequence[np.ndarray], training: Sequence[np.ndarray], below: float = NOVELTY_IOU) -> float:
    """Share of the non-empty generated masks whose best IoU with any training mask is below ``below``.

    A model that copies its training defects scores 0; empty masks are no defect at all and are left out.
    """
    shown = [m for m in generated if np.any(m)]
    if not shown:
        return 0.0
    novel = [max(iou(m, t) for t in training) < below for m in shown]
    return float(np.mean(novel))


def with_flips(masks: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Every mask plus its horizontal, vertical and double flip: the training set as augmentation shows it."""
    return [f for m in masks for f in (m, m[:, ::-1], m[::-1], m[::-1, ::-1])]


def evaluate(
    globals_: np.ndarray, parts: np.ndarray, training_masks: Sequence[np.ndarray]
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Metrics of generated pairs: globals_ and parts (N, H, W, 3) in [0, 1]; training_masks as the model saw them.

    Returns (metrics, anomaly masks (N, H, W), global defect regions (N, H, W)). Metrics: ``defect_fraction``
    (global images with a dark region), ``anomaly_defect_fraction`` (anomaly images with a mask), ``mean_iou``,
    ``chance_iou``, ``novelty_share``.
    """
    masks = np.stack([anomaly_mask(p) for p in parts])
    regions = np.stack([defect_region(g) for g in globals_])
    metrics = {
        "defect_fraction": float(np.mean([r.any() for r in regions])),
        "anomaly_defect_fraction": float(np.mean([m.any() for m in masks])),
        "mean_iou": float(np.mean(paired_iou(masks, regions))),
        "chance_iou": chance_iou(list(masks), list(regions)),
        "novelty_share": novelty_share(list(masks), training_masks),
    }
    return metrics, masks, regions
