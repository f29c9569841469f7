"""LPIPS-VGG (Zhang et al., 2018, v0.1) from the ``lpips`` package (0.1.4, as the authors), with user-supplied weights.

``lpips.LPIPS(net="vgg")`` is built without its download (``pnet_rand=True``: torchvision's VGG16 would otherwise
be fetched at run time); its backbone then gets torchvision's ``vgg16-397923af.pth`` (``features.{i}`` ->
``net.slice{k}.{i}``, same module indices) and its five linear heads ``lin{k}.model.1.weight`` (1, C, 1, 1) come
from lpips' own ``weights/v0.1/vgg.pth``, both read with ``weights_only=True``.

Distance of images x, y in [-1, 1] (the package's ``forward``): scale by its fixed shift and scale, take the ReLU
outputs after VGG blocks 1-5, unit-normalise each pixel's channel vector, and sum over blocks the spatial mean of
sum_c w_c (f_x - f_y)^2. That is a squared Euclidean distance between the flattened, sqrt(w)-weighted features divided
by the block's pixel count, so ``pairwise`` embeds every image once with the package's layers and gets all distances
from Gram matrices: the package's ``forward`` runs VGG on both images of every pair, 1,225 pairs per 50-image cluster.
``tests/test_metrics.py`` checks the two agree.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import lpips
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..common.imageio import as_float_image, resize
from .assets import LPIPS_HEADS, VGG16, hint, lpips_heads_path, vgg16_path

log = logging.getLogger(__name__)

LPIPS_SIZE = 256
SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))
"""``features`` indices of lpips' five VGG slices (ending after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3)."""
CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def _load_state(path: os.PathLike, what: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several unrelated types for a file that is not a checkpoint
        raise ValueError(f"{path}: cannot read the {what} ({err.__class__.__name__}: {err})") from err
    if not isinstance(state, dict):
        raise ValueError(f"{path}: the {what} must be a state dict, got {type(state).__name__}")  # noqa: TRY004
    return state


def vgg16_to_lpips_keys(state: dict[str, torch.Tensor], file: os.PathLike | str = "VGG16 file") -> dict:
    """torchvision's ``features.{i}.weight|bias`` -> lpips' ``net.slice{k}.{i}.weight|bias`` (``classifier``
    dropped)."""
    missing = [f"features.{i}.weight" for i in CONVS if f"features.{i}.weight" not in state]
    if missing:
        raise ValueError(f"{file}: not torchvision's VGG16 state dict (no {missing[0]}). {hint(VGG16)}")
    out = {}
    for k, (lo, hi) in enumerate(SLICES, 1):
        for i in range(lo, hi):
            for kind in ("weight", "bias"):
                if f"features.{i}.{kind}" in state:
                    out[f"net.slice{k}.{i}.{kind}"] = state[f"features.{i}.{kind}"]
    return out


def _heads_file(heads: str | os.PathLike | None) -> Path:
    """The heads as ``assets`` finds them, else the copy inside the installed lpips package (the same 0.1.4 file).
    A path the user named (``heads`` or the environment variable) that does not exist is an error, not a fall-back."""
    try:
        return lpips_heads_path(heads)
    except FileNotFoundError:
        packaged = Path(lpips.__file__).parent / LPIPS_HEADS.member.removeprefix("lpips/")
        if heads is None and not os.environ.get(LPIPS_HEADS.env_var) and packaged.is_file():
            return packaged
        raise


def build_lpips(vgg: str | os.PathLike | None = None, heads: str | os.PathLike | None = None) -> lpips.LPIPS:
    """``lpips.LPIPS`` (VGG, v0.1) in eval mode with the user's VGG16 and the lpips heads; paths as in ``assets``."""
    vgg_file, heads_file = vgg16_path(vgg), _heads_file(heads)
    backbone = vgg16_to_lpips_keys(_load_state(vgg_file, "VGG16 weights"), vgg_file)
    head_state = _load_state(heads_file, "LPIPS heads")
    names = [f"lin{k}.model.1.weight" for k in range(5)]
    missing = [n for n in names if n not in head_state]
    if missing:
        raise ValueError(f"{heads_file}: not LPIPS heads (no {missing[0]}). {hint(LPIPS_HEADS)}")
    with warnings.catch_warnings():  # lpips 0.1.4 passes torchvision's retired ``pretrained=False``
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(pretrained=False, net="vgg", version="0.1", pnet_rand=True, verbose=False)
    try:
        model.load_state_dict({**backbone, **{n: head_state[n] for n in names}}, strict=False)
    except RuntimeError as err:
        raise ValueError(f"{vgg_file} / {heads_file}: the weights do not fit LPIPS-VGG's layout: {err}") from err
    for k, name in enumerate(names):
        if (head_state[name] < 0).any():
            raise ValueError(f"{heads_file}: LPIPS head {k} has negative weights; LPIPS heads are non-negative")
    return model.eval().requires_grad_(False)


def to_lpips_input(image: np.ndarray, size: int = LPIPS_SIZE) -> torch.Tensor:
    """(1, 3, size, size) in [-1, 1] from an (H, W, 3) RGB image (resized with area averaging when shrinking)."""
    x = as_float_image(image)
    x = resize(x, size, size)
    return torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1)[None] * 2.0 - 1.0


class LPIPS(nn.Module):
    """LPIPS distances of the ``lpips`` package's network, per pair (``forward``) or as matrices (``pairwise``)."""

    def __init__(self, net: lpips.LPIPS, size: int = LPIPS_SIZE) -> None:
        super().__init__()
        self.net = net.eval()
        self.size = size

    @classmethod
    def from_files(
        cls,
        vgg: str | os.PathLike | None = None,
        heads: str | os.PathLike | None = None,
        device: str = "cpu",
        size: int = LPIPS_SIZE,
    ) -> LPIPS:
        """LPIPS-VGG from torchvision's VGG16 file and the lpips heads file (paths resolved as in ``assets``)."""
        return cls(build_lpips(vgg, heads), size).to(device)

    @property
    def device(self) -> torch.device:
        return self.net.scaling_layer.shift.device

    @torch.inference_mode()
    def embed(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (N, 3, H, W) in [-1, 1] -> per block (N, C*h*w) sqrt(w)-weighted unit features over sqrt(h*w)."""
        feats = self.net.net(self.net.scaling_layer(x.to(self.device)))
        out = []
        for f, lin in zip(feats, self.net.lins):
            root = lin.model[-1].weight.clamp(min=0).sqrt().view(1, -1, 1, 1)
            f = lpips.normalize_tensor(f) * root
            out.append((f / (f.shape[2] * f.shape[3]) ** 0.5).flatten(1))
        return out

    @torch.inference_mode()
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(N,) LPIPS between matching rows of x and y, each (N, 3, H, W) in [-1, 1]: the package's own forward."""
        return self.net(x.to(self.device), y.to(self.device)).flatten()

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


__all__ = ["LPIPS", "LPIPS_SIZE", "build_lpips", "to_lpips_input", "vgg16_to_lpips_keys"]
