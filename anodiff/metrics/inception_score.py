"""Inception Score (Salimans et al., 2016) exactly as torch-fidelity computes it: the papers' headline number.

The authors run ``fidelity --isc --input1 <type>/image`` (torch-fidelity's defaults) per anomaly type, average the
types of a category, then the categories (landscape.md §5). torch-fidelity's recipe, used here through its own code:
the 2015-12-05 Inception (``FeatureExtractorInceptionV3``: uint8 RGB resized to 299 px by TF1's bilinear rule,
``(x - 128) / 128``), its 1008 logits without the fc bias (``logits_unbiased``), the images shuffled with seed 2020
and cut into 10 splits, IS = mean over splits of exp(mean KL(p(y|x) || p(y))) (``isc_features_to_metric``).

Only torch-fidelity's loading differs: it reads the weights file with ``weights_only=False``; we read it once with
``weights_only=True`` (tensors and plain containers only, or it fails) and hand torch-fidelity those checked bytes.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.metric_isc import isc_features_to_metric
from tqdm.auto import tqdm

from .assets import INCEPTION_LOGITS, file_digest, hint, inception_logits_path

log = logging.getLogger(__name__)

SPLITS = 10
SEED = 2020
"""torch-fidelity's defaults (``isc_splits``, ``rng_seed``), which the authors' command line keeps."""
LOGITS = 1008
ImageLike = np.ndarray | str | os.PathLike


@dataclass(frozen=True)
class ISResult:
    """Mean and standard deviation of the score over the splits, and the number of images."""

    mean: float
    std: float
    images: int
    splits: int

    def as_dict(self) -> dict:
        return asdict(self)


def load_is_inception(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> torch.nn.Module:
    """torch-fidelity's InceptionV3 returning (N, 1008) ``logits_unbiased``, with the user's weights file."""
    file = inception_logits_path(path)
    data = file.read_bytes()
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for a file that is not a checkpoint
        raise ValueError(
            f"{file}: cannot read the Inception weights ({err.__class__.__name__}). {hint(INCEPTION_LOGITS)}"
        ) from err
    fc = state.get("fc.weight") if isinstance(state, dict) else None
    if fc is None or tuple(fc.shape) != (LOGITS, 2048):
        raise ValueError(
            f"{file}: not the 2015-12-05 Inception's state dict (expected fc.weight of shape ({LOGITS}, 2048), as in "
            f"{INCEPTION_LOGITS.filename}). {hint(INCEPTION_LOGITS)}"
        )
    try:
        model = FeatureExtractorInceptionV3("inception-v3-compat", ["logits_unbiased"], io.BytesIO(data))
    except RuntimeError as err:
        raise ValueError(f"{file}: the weights do not fit torch-fidelity's InceptionV3: {err}") from err
    return model.to(device)


def describe_network(path: str | os.PathLike | None = None) -> str:
    """The file and its sha256 prefix, for the report (the papers' file is named ...-6726825d.pth)."""
    file = Path(inception_logits_path(path))
    return f"{file.name} (sha256 {file_digest(file, 'sha256')[:8]})"


def _uint8(item: ImageLike) -> np.ndarray:
    """(H, W, 3) uint8 RGB, as torch-fidelity's folder reader (PIL, ``convert("RGB")``) gives it."""
    if isinstance(item, np.ndarray) and item.dtype == np.uint8:
        return item
    from ..common.imageio import as_float_image, read_image

    image = as_float_image(item) if isinstance(item, np.ndarray) else read_image(item)
    return np.round(image * 255.0).astype(np.uint8)


@torch.inference_mode()
def logits(
    images: Sequence[ImageLike], model: torch.nn.Module, batch_size: int = 16, progress: bool = False
) -> torch.Tensor:
    """(N, 1008) float32 logits of images (arrays or paths); a batch holds consecutive images of one size."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    out, batch = [], []

    def flush() -> None:
        x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).contiguous().to(device)
        out.append(model(x)[0].float().cpu())
        batch.clear()

    for item in tqdm(images, desc="inception score", unit="img", disable=not progress):
        image = _uint8(item)
        if batch and (image.shape != batch[0].shape or len(batch) == batch_size):
            flush()
        batch.append(image)
    if batch:
        flush()
    if not out:
        raise ValueError("no images to compute the Inception Score of")
    return torch.cat(out)


def inception_score(scores: torch.Tensor, splits: int = SPLITS, seed: int = SEED) -> ISResult:
    """IS of (N, 1008) logits by torch-fidelity's ``isc_features_to_metric`` (shuffled with ``seed``, ``splits``)."""
    if scores.ndim != 2 or len(scores) < splits:
        raise ValueError(f"the Inception Score with {splits} splits needs at least {splits} images, got {len(scores)}")
    out = isc_features_to_metric(scores, splits=splits, shuffle=True, rng_seed=seed)
    return ISResult(out["inception_score_mean"], out["inception_score_std"], len(scores), splits)


__all__ = ["LOGITS", "SEED", "SPLITS", "ISResult", "describe_network", "inception_score", "load_is_inception", "logits"]
