"""IC-LPIPS (intra-cluster LPIPS), the diversity score of AnomalyDiffusion and DualAnoDiff (reference §9.2).

Protocol: the few training anomaly images are the cluster centres; each generated image joins its LPIPS-nearest
centre; in each cluster at most ``max_per_cluster`` (50) members are kept after a shuffle, and their mean pairwise
LPIPS is the cluster's score; the result is the mean over clusters with a score. The authors shuffle unseeded; we
seed it so a report is reproducible. A cluster with fewer than two members has no pair and is skipped, as their NaN
is (SeaS counts such clusters as 0 instead, which lowers the score: the variants are not comparable, landscape §5).

``distance`` is any callable ``(images_a, images_b | None) -> (len_a, len_b) matrix``, e.g. ``LPIPS.pairwise``; tests
inject a cheap one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

log = logging.getLogger(__name__)

MAX_PER_CLUSTER = 50
Distance = Callable[[Sequence, "Sequence | None"], np.ndarray]


@dataclass(frozen=True)
class ICLPIPSResult:
    """The score, and per centre: members assigned, members used, and the cluster's mean pairwise distance."""

    score: float
    clusters_used: int
    assigned: list[int] = field(default_factory=list)
    used: list[int] = field(default_factory=list)
    cluster_scores: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def assign(generated: Sequence, centres: Sequence, distance: Distance) -> np.ndarray:
    """(N,) index of each generated image's nearest centre (the first one on a tie)."""
    matrix = np.asarray(distance(generated, centres))
    if matrix.shape != (len(generated), len(centres)):
        raise ValueError(f"distance returned shape {matrix.shape}, expected {(len(generated), len(centres))}")
    return matrix.argmin(axis=1)


def mean_pairwise(members: Sequence, distance: Distance) -> float:
    """Mean distance over the unordered pairs i < j of ``members``; NaN with fewer than two."""
    if len(members) < 2:
        return float("nan")
    matrix = np.asarray(distance(members, None))
    return float(matrix[np.triu_indices(len(members), k=1)].mean())


def ic_lpips(
    generated: Sequence,
    centres: Sequence,
    distance: Distance,
    max_per_cluster: int = MAX_PER_CLUSTER,
    seed: int = 0,
) -> ICLPIPSResult:
    """IC-LPIPS of ``generated`` images around the training anomaly images ``centres`` (module docstring)."""
    if len(centres) == 0:
        raise ValueError("IC-LPIPS needs at least one cluster centre (a training anomaly image)")
    if len(generated) == 0:
        raise ValueError("IC-LPIPS needs generated images")
    if max_per_cluster < 2:
        raise ValueError(f"max_per_cluster must be >= 2 (a cluster scores its pairs), got {max_per_cluster}")
    labels = assign(generated, centres, distance)
    rng = np.random.default_rng(seed)
    assigned, used, scores = [], [], []
    for centre in range(len(centres)):
        members = np.flatnonzero(labels == centre)
        rng.shuffle(members)
        keep = [generated[i] for i in members[:max_per_cluster]]
        assigned.append(len(members))
        used.append(len(keep))
        scores.append(mean_pairwise(keep, distance))
        log.debug("cluster %d: %d assigned, %d used, %.4f", centre, len(members), len(keep), scores[-1])
    valid = [s for s in scores if np.isfinite(s)]
    score = float(np.mean(valid)) if valid else float("nan")
    return ICLPIPSResult(score, len(valid), assigned, used, scores)


__all__ = ["MAX_PER_CLUSTER", "ICLPIPSResult", "assign", "ic_lpips", "mean_pairwise"]
