"""LPIPS-VGG (Zhang et al., 2018, v0.1) in plain torch, from user-supplied weights: no torchvision, no downloads.

The backbone is torchvision's VGG16 ``features`` stack, rebuilt here with the same module indices so that
torchvision's ``vgg16-397923af.pth`` loads by key; its conv widths are read from the file, so tests can use a tiny
stand-in. The five linear heads come from the ``lpips`` wheel (``lin{k}.model.1.weight``, shape (1, C, 1, 1)).

Distance of images x, y in [-1, 1]: scale by LPIPS's fixed shift and scale, take the ReLU outputs after VGG blocks 1-5,
unit-normalise each pixel's channel vector, and sum over blocks the spatial mean of sum_c w_c (f_x - f_y)^2.
That is a squared Euclidean distance between the flattened, sqrt(w)-weighted features divided by the block's pixel
count, so ``pairwise`` embeds every image once and gets all distances from Gram matrices.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..masks import as_float_image
from .assets import LPIPS_HEADS, VGG16, hint, lpips_heads_path, vgg16_path

log = logging.getLogger(__name__)

LPIPS_SIZE = 256
VGG16_BLOCKS = (2, 2, 3, 3, 3)
TAPS = (3, 8, 15, 22, 29)
"""Indices in ``features`` of the ReLUs LPIPS reads (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3)."""
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10


class VGG16Features(nn.Module):
    """torchvision's ``vgg16().features`` up to relu5_3, with configurable widths; returns the five LPIPS taps."""

    def __init__(self, widths: Sequence[int] = (64, 128, 256, 512, 512)) -> None:
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"VGG16 has 5 blocks, got {len(widths)} widths")
        layers: list[nn.Module] = []
        channels = 3
        for block, (width, convs) in enumerate(zip(widths, VGG16_BLOCKS)):
            if block:
                layers.append(nn.MaxPool2d(2, 2))
            for _ in range(convs):
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
                channels = width
        self.features = nn.Sequential(*layers)
        self.widths = tuple(widths)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in TAPS:
                out.append(x)
        return out


def _load_state(path: os.PathLike, what: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for a file that is not a checkpoint
        raise ValueError(f"{path}: cannot read the {what} ({err.__class__.__name__}: {err})") from err
    if not isinstance(state, dict):
        raise ValueError(f"{path}: the {what} must be a state dict, got {type(state).__name__}")  # noqa: TRY004
    return state


def load_vgg16(path: str | os.PathLike | None = None) -> VGG16Features:
    """VGG16 features from torchvision's state dict (``features.*`` keys; ``classifier.*`` is ignored)."""
    file = vgg16_path(path)
    state = _load_state(file, "VGG16 weights")
    convs = [f"features.{i}.weight" for i in (0, 5, 10, 17, 24)]
    missing = [k for k in convs if k not in state]
    if missing:
        raise ValueError(f"{file}: not torchvision's VGG16 state dict (no {missing[0]}). {hint(VGG16)}")
    model = VGG16Features([int(state[k].shape[0]) for k in convs])
    wanted = {
        k: v for k, v in state.items() if k.startswith("features.") and int(k.split(".")[1]) < len(model.features)
    }
    try:
        model.load_state_dict(wanted, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{file}: the VGG16 weights do not fit VGG16's layout: {err}") from err
    return model.eval()


def load_heads(path: str | os.PathLike | None = None) -> list[torch.Tensor]:
    """The five (C,) channel weights of LPIPS-VGG's linear heads."""
    file = lpips_heads_path(path)
    state = _load_state(file, "LPIPS heads")
    try:
        return [state[f"lin{k}.model.1.weight"].float().flatten() for k in range(5)]
    except KeyError as err:
        raise ValueError(f"{file}: not LPIPS heads (no {err.args[0]}). {hint(LPIPS_HEADS)}") from err


def to_lpips_input(image: np.ndarray, size: int = LPIPS_SIZE) -> torch.Tensor:
    """(1, 3, size, size) in [-1, 1] from an (H, W, 3) RGB image (resized with area averaging when shrinking)."""
    x = as_float_image(image)
    if x.shape[:2] != (size, size):
        shrink = x.shape[0] * x.shape[1] > size * size
        x = cv2.resize(x, (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None] * 2.0 - 1.0


class LPIPS(nn.Module):
    """LPIPS distance from a backbone that returns 5 feature maps and the 5 heads' channel weights."""

    def __init__(self, backbone: nn.Module, heads: Sequence[torch.Tensor], size: int = LPIPS_SIZE) -> None:
        super().__init__()
        self.backbone = backbone.eval()
        self.size = size
        for k, w in enumerate(heads):
            if (w < 0).any():
                raise ValueError(f"LPIPS head {k} has negative weights; LPIPS heads are non-negative")
            self.register_buffer(f"root{k}", w.float().clamp(min=0).sqrt().view(1, -1, 1, 1))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))

    @classmethod
    def from_files(
        cls, vgg: str | os.PathLike | None = None, heads: str | os.PathLike | None = None, device: str = "cpu"
    ) -> LPIPS:
        """LPIPS-VGG from torchvision's VGG16 file and the lpips heads file (paths resolved as in ``assets``)."""
        return cls(load_vgg16(vgg), load_heads(heads)).to(device)

    @torch.inference_mode()
    def embed(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (N, 3, H, W) in [-1, 1] -> per block (N, C*h*w) sqrt(w)-weighted unit features over sqrt(h*w)."""
        feats = self.backbone((x.to(self.shift.device) - self.shift) / self.scale)
        out = []
        for k, f in enumerate(feats):
            f = f / (f.pow(2).sum(1, keepdim=True).sqrt() + _EPS) * getattr(self, f"root{k}")
            out.append((f / (f.shape[2] * f.shape[3]) ** 0.5).flatten(1))
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(N,) LPIPS between matching rows of x and y, each (N, 3, H, W) in [-1, 1]."""
        return sum((a - b).pow(2).sum(1) for a, b in zip(self.embed(x), self.embed(y)))

    def _embed_all(self, images: Sequence, batch_size: int, progress: bool) -> list[torch.Tensor]:
        from .fid import _load

        blocks: list[list[torch.Tensor]] = []
        for start in tqdm(range(0, len(images), batch_size), desc="lpips", unit="batch", disable=not progress):
            batch = torch.cat([to_lpips_input(_load(i), self.size) for i in images[start : start + batch_size]])
            blocks.append([f.half().cpu() for f in self.embed(batch)])  # half: 16 MB per 256 px image
        return [torch.cat(parts) for parts in zip(*blocks)]

    def pairwise(
        self, a: Sequence, b: Sequence | None = None, batch_size: int = 8, progress: bool = False
    ) -> np.ndarray:
        """(len(a), len(b)) LPIPS of images (arrays or paths); ``b=None`` means ``a`` against itself.

        ``b`` (the few centres) is embedded once and ``a`` streamed a batch at a time; with ``b=None`` all of ``a``
        is held, at 16 MB per 256 px image in half precision, so keep it to a cluster's 50 images.
        """
        if b is None:
            embedded = self._embed_all(a, batch_size, progress)
            return _distances(embedded, embedded)
        eb = self._embed_all(b, batch_size, False)
        rows = [
            _distances(self._embed_all(a[start : start + batch_size], batch_size, False), eb)
            for start in tqdm(range(0, len(a), batch_size), desc="lpips", unit="batch", disable=not progress)
        ]
        return np.concatenate(rows)


def _distances(ea: list[torch.Tensor], eb: list[torch.Tensor], chunk_bytes: int = 1 << 28) -> np.ndarray:
    """Sum over blocks of squared distances between the rows of ``ea`` and ``eb``, as |a|^2 + |b|^2 - 2 a.b.

    In float64, in row chunks of at most ``chunk_bytes`` per operand: in float32 the cancellation of millions of
    terms loses the small distances between similar images.
    """
    total = torch.zeros(len(ea[0]), len(eb[0]), dtype=torch.float64)
    for fa, fb in zip(ea, eb):
        rows = max(1, chunk_bytes // (fa.shape[1] * 8))
        norms_b = torch.cat([fb[j : j + rows].double().pow(2).sum(1) for j in range(0, len(fb), rows)])
        for i in range(0, len(fa), rows):
            xa = fa[i : i + rows].double()
            norms_a = xa.pow(2).sum(1)
            for j in range(0, len(fb), rows):
                cross = xa @ fb[j : j + rows].double().T
                total[i : i + rows, j : j + rows] += norms_a[:, None] + norms_b[None, j : j + rows] - 2 * cross
    return total.clamp(min=0).numpy()


__all__ = ["LPIPS", "LPIPS_SIZE", "VGG16Features", "load_heads", "load_vgg16", "to_lpips_input"]
