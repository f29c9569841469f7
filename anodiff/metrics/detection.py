"""Detection and localisation scores: AUROC, AP and F1-max from scikit-learn, AU-PRO (no library has it) here.

AUROC, AP and the precision-recall curve are scikit-learn's ``roc_auc_score``, ``average_precision_score`` and
``precision_recall_curve``: exact over every distinct threshold (ties grouped), where the authors' scripts sample 21 or
100 fixed thresholds; the numbers agree to the sampling error. ``labels`` are 0/1 (or bool), ``scores`` any real
numbers, higher = more anomalous. AU-PRO stays our own code: scikit-learn, torchmetrics and torch-fidelity have no
per-region overlap curve (anomalib has one, but pulls in Lightning for a 40-line function); it is tested on worked
examples in tests/test_metrics_eval.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

PRO_FPR_LIMIT = 0.3


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = np.asarray(labels).ravel().astype(bool), np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels but {scores.size} scores; pass one score per label")
    if not np.isfinite(scores).all():
        raise ValueError("scores hold NaN or infinite values")
    if labels.all() or not labels.any():
        raise ValueError("labels must hold both classes (some anomalous, some normal) for a ranking score")
    return labels, scores


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count 1/2): 1 perfect, 0.5 chance, 0 inverted."""
    return float(roc_auc_score(*_check(labels, scores)))


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """AP = sum over thresholds of (recall step) x precision (scikit-learn's step rule, no interpolation)."""
    return float(average_precision_score(*_check(labels, scores)))


def pr_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) at every distinct score, as scikit-learn returns them."""
    return precision_recall_curve(*_check(labels, scores))


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    """The best F1 = 2PR / (P + R) over all thresholds of the precision-recall curve."""
    precision, recall, _ = pr_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return float(f1.max())


def au_pro(masks: Sequence[np.ndarray], maps: Sequence[np.ndarray], fpr_limit: float = PRO_FPR_LIMIT) -> float:
    """Area under the per-region-overlap curve up to ``fpr_limit``, divided by it (Bergmann et al., MVTec AD).

    PRO at a threshold: mean over the 8-connected defect regions of all masks of the share of the region above it;
    FPR: share of all normal pixels above it. Each defect pixel adds 1 / (region size x region count) to PRO once it
    is above the threshold, so the whole curve comes from one sort. The curve is cut at ``fpr_limit`` exactly
    (linear interpolation), so 1 = every region fully found before any false positive, 0 = none found by then.
    masks: (H, W) ground truth (> 0.5 or > 127 is defect); maps: (H, W) scores of the same shape.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    if len(masks) != len(maps):
        raise ValueError(f"{len(masks)} masks but {len(maps)} anomaly maps")
    weights, scores, regions = [], [], 0
    for k, (mask, amap) in enumerate(zip(masks, maps)):
        mask = np.asarray(mask)
        mask = mask > 127 if mask.dtype == np.uint8 else mask > 0.5
        if mask.shape != np.shape(amap):
            raise ValueError(f"mask {k} has shape {mask.shape} but its map {np.shape(amap)}; resize the map")
        count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
        sizes = np.bincount(labels.ravel(), minlength=count).astype(np.float64)
        w = np.where(labels > 0, 1.0 / sizes[labels], 0.0)
        w[~mask] = -1.0  # marks normal pixels
        weights.append(w.ravel())
        scores.append(np.asarray(amap, dtype=np.float64).ravel())
        regions += count - 1
    w, s = np.concatenate(weights), np.concatenate(scores)
    normal = w < 0
    if regions == 0 or normal.all() or not normal.any():
        raise ValueError("AU-PRO needs masks with at least one defect region and some normal pixels")
    order = np.argsort(-s, kind="mergesort")
    w, s, normal = w[order], s[order], normal[order]
    pro = np.cumsum(np.where(normal, 0.0, w)) / regions
    fpr = np.cumsum(normal) / normal.sum()
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    fpr, pro = np.r_[0.0, fpr[last]], np.r_[0.0, pro[last]]
    inside = fpr <= fpr_limit
    cut_fpr, cut_pro = fpr[inside], pro[inside]
    if cut_fpr[-1] < fpr_limit:
        nxt = np.flatnonzero(~inside)[0]
        t = (fpr_limit - fpr[nxt - 1]) / (fpr[nxt] - fpr[nxt - 1])
        cut_fpr = np.r_[cut_fpr, fpr_limit]
        cut_pro = np.r_[cut_pro, pro[nxt - 1] + t * (pro[nxt] - pro[nxt - 1])]
    return float(np.sum(np.diff(cut_fpr) * (cut_pro[1:] + cut_pro[:-1]) / 2) / fpr_limit)


__all__ = ["PRO_FPR_LIMIT", "au_pro", "auroc", "average_precision", "f1_max", "pr_curve"]
