"""Mask alignment: does the anomaly branch's mask sit where the defect of the whole image is?

DualAnoDiff's claim is that its two branches agree pixel by pixel; the authors never measure it. We score it as the
mean IoU between pair i's anomaly-branch mask and the defect region of pair i's global image, next to the chance
level: the mean IoU over mismatched pairs (i != j). Only the margin over chance says anything, because a category
whose defects always sit in one place scores high without any alignment. The global image's defect region is not
stored, so ``defect_region`` estimates it as the difference to the nearest normal image (a heuristic; callers may pass
masks from any other source). ``novelty`` counts generated masks unlike every training mask (best IoU < 0.5).

Masks are ``(H, W)`` arrays: bool, uint8 (> 127 is defect, as the authors' loader) or float in [0, 1] (> 0.5).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from ..common.imageio import as_float_image, resize
from ..data.masks import remove_small

log = logging.getLogger(__name__)

NOVELTY_IOU = 0.5
_CHUNK = 256


def binarize(mask: np.ndarray, name: str = "mask") -> np.ndarray:
    """``(H, W)`` bool from a bool, uint8 (> 127) or float (> 0.5) mask; a colour mask counts its brightest channel."""
    mask = np.asarray(mask)
    if mask.ndim == 3:
        mask = mask[..., :3].max(axis=2)
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"{name} must be a non-empty (H, W) array, got shape {mask.shape}")
    if mask.dtype == bool:
        return mask
    if mask.dtype == np.uint8:
        return mask > 127
    if np.issubdtype(mask.dtype, np.number):
        return mask > 0.5
    raise TypeError(f"{name} must be bool, uint8 or float, got dtype {mask.dtype}")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two masks of one shape; NaN when both are empty (nothing to compare)."""
    a, b = binarize(a, "a"), binarize(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"masks must have one shape, got {a.shape} and {b.shape}; resize one with nearest neighbour")
    union = np.logical_or(a, b).sum()
    if union == 0:
        return float("nan")
    return float(np.logical_and(a, b).sum() / union)


def _stack(masks: Sequence[np.ndarray], size: int, name: str) -> np.ndarray:
    """(N, size*size) float32 of 0/1: masks resized by pixel share (INTER_AREA, >= 0.5), so thin parts survive."""
    rows = []
    for k, mask in enumerate(masks):
        m = binarize(mask, f"{name}[{k}]").astype(np.float32)
        m = resize(m, size, size)
        rows.append((m >= 0.5).astype(np.float32).ravel())
    if not rows:
        raise ValueError(f"{name} is empty: pass at least one mask")
    return np.stack(rows)


def iou_matrix(a_masks: Sequence[np.ndarray], b_masks: Sequence[np.ndarray], size: int = 256) -> np.ndarray:
    """``(N, M)`` IoU of every mask of ``a_masks`` with every one of ``b_masks``, all resized to ``size`` px.

    NaN where both masks are empty. Computed as a matrix product in chunks, so 500 x 500 pairs take a second.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1 pixel, got {size}")
    a, b = _stack(a_masks, size, "a_masks"), _stack(b_masks, size, "b_masks")
    area_a, area_b = a.sum(axis=1), b.sum(axis=1)
    out = np.empty((len(a), len(b)), dtype=np.float64)
    for start in range(0, len(a), _CHUNK):
        inter = a[start : start + _CHUNK] @ b.T
        union = area_a[start : start + _CHUNK, None] + area_b[None, :] - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + _CHUNK] = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    return out


@dataclass(frozen=True)
class AlignmentResult:
    """Mean IoU of matched pairs, the mismatched-pair chance level, and how many pairs were undefined (both empty)."""

    mean_iou: float
    chance_iou: float
    pairs: int
    undefined: int
    empty_anomaly_masks: int
    empty_global_masks: int

    @property
    def margin(self) -> float:
        """Alignment beyond chance: the number to read."""
        return self.mean_iou - self.chance_iou

    def as_dict(self) -> dict:
        return {**asdict(self), "margin": self.margin}


def _nanmean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def alignment(
    anomaly_masks: Sequence[np.ndarray], global_masks: Sequence[np.ndarray], size: int = 256
) -> AlignmentResult:
    """IoU of ``anomaly_masks[i]`` with ``global_masks[i]`` averaged over i, and over all i != j for chance.

    Needs at least two pairs (one mismatched pair). Pairs with both masks empty are left out of both means.
    """
    if len(anomaly_masks) != len(global_masks):
        raise ValueError(f"{len(anomaly_masks)} anomaly masks but {len(global_masks)} global masks; pass one per pair")
    if len(anomaly_masks) < 2:
        raise ValueError("alignment needs at least 2 pairs: the chance level comes from mismatched pairs")
    matrix = iou_matrix(anomaly_masks, global_masks, size)
    matched = np.diag(matrix)
    off = matrix[~np.eye(len(matrix), dtype=bool)]
    empty_a = sum(not binarize(m).any() for m in anomaly_masks)
    empty_g = sum(not binarize(m).any() for m in global_masks)
    return AlignmentResult(
        _nanmean(matched), _nanmean(off), len(matched), int(np.isnan(matched).sum()), empty_a, empty_g
    )


@dataclass(frozen=True)
class NoveltyResult:
    """Share of non-empty generated masks whose best IoU with any training mask is below ``threshold``."""

    share: float
    threshold: float
    masks: int
    empty: int
    mean_best_iou: float

    def as_dict(self) -> dict:
        return asdict(self)


def novelty(
    generated_masks: Sequence[np.ndarray],
    training_masks: Sequence[np.ndarray],
    threshold: float = NOVELTY_IOU,
    size: int = 256,
) -> NoveltyResult:
    """How many generated defects are new shapes or places rather than copies of the few training masks.

    Empty generated masks are failures, not novelties: they are counted in ``empty`` and left out of ``share``.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be an IoU in [0, 1], got {threshold}")
    matrix = iou_matrix(generated_masks, training_masks, size)
    empty = np.array([not binarize(m).any() for m in generated_masks])
    best = np.nan_to_num(matrix[~empty], nan=0.0).max(axis=1) if (~empty).any() else np.zeros(0)
    share = float((best < threshold).mean()) if best.size else float("nan")
    mean_best = float(best.mean()) if best.size else float("nan")
    return NoveltyResult(share, float(threshold), len(generated_masks), int(empty.sum()), mean_best)


THUMB = 64


def thumbnails(images: Sequence[np.ndarray]) -> np.ndarray:
    """(N, 64, 64, 3) float32 thumbnails for ``nearest``; compute them once for a set of references."""
    return np.stack([cv2.resize(as_float_image(i), (THUMB, THUMB), interpolation=cv2.INTER_AREA) for i in images])


def nearest(image: np.ndarray, references: Sequence[np.ndarray] | np.ndarray) -> int:
    """Index of the reference closest to ``image`` in mean squared error at 64 x 64 (pose and colour match).

    references: images, or their ``thumbnails`` (an (N, 64, 64, 3) array) to avoid resizing them at every call.
    """
    if len(references) == 0:
        raise ValueError("no reference images to compare with; pass the category's train/good images")
    is_thumbs = (
        isinstance(references, np.ndarray) and references.ndim == 4 and references.shape[1:] == (THUMB, THUMB, 3)
    )
    thumbs = references if is_thumbs else thumbnails(references)
    target = thumbnails([image])
    return int(np.argmin(((thumbs - target) ** 2).mean(axis=(1, 2, 3))))


def defect_region(image: np.ndarray, reference: np.ndarray, floor: float = 0.1, min_share: float = 1e-3) -> np.ndarray:
    """``(H, W)`` bool estimate of the defect in a whole image: where it differs from a normal ``reference``.

    Both are blurred (sigma = side / 128) to ignore texture and noise; the per-pixel largest channel difference is
    cut at Otsu's threshold, but never below ``floor`` (in [0, 1] units) so a defect-free image gives little or no
    region; components under ``min_share`` of the image are dropped. Misaligned objects and textures inflate it, which
    the mismatched-pair chance level of ``alignment`` absorbs.
    """
    x = as_float_image(image, "image")
    h, w = x.shape[:2]
    ref = as_float_image(reference, "reference")
    if ref.shape[:2] != (h, w):
        ref = cv2.resize(ref, (w, h), interpolation=cv2.INTER_AREA)
    sigma = max(1.0, max(h, w) / 128.0)
    diff = np.abs(cv2.GaussianBlur(x, (0, 0), sigma) - cv2.GaussianBlur(ref, (0, 0), sigma)).max(axis=2)
    otsu, _ = cv2.threshold(np.round(diff * 255).astype(np.uint8), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = diff > max(floor, otsu / 255.0)
    return remove_small(mask, int(min_share * h * w))


__all__ = [
    "NOVELTY_IOU",
    "AlignmentResult",
    "NoveltyResult",
    "alignment",
    "binarize",
    "defect_region",
    "iou",
    "iou_matrix",
    "nearest",
    "novelty",
    "thumbnails",
]
