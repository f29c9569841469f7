"""A lean dual-branch UNet for the demo (0.74 M parameters; 0.64 M without SAIM), SAIM after every res block.

With no Stable Diffusion offline, the demo trains a small pixel-space model from scratch instead of LoRAs on a
frozen SD1.5. What it keeps from DualAnoDiff is the part under test: both branches run in one batch laid out
``[g0, a0, g1, a1, ...]`` (``anodiff.model.pairs``), a learned branch embedding plays the role of the per-branch LoRA,
and ``anodiff.model.saim.SAIM`` (unchanged) joins the two branches token by token at every resolution. ``saim=False``
builds the same network without it: the ablation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..model.pairs import BRANCHES, branch_ids
from ..model.saim import SAIM


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(R,) integer timesteps -> (R, dim) sinusoidal features, as in DDPM."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv, plus the (time + branch) embedding, twice; 1x1 skip when widths differ."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int = 8) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x: (R, cin, H, W); emb: (R, emb_dim) -> (R, cout, H, W)."""
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class SpatialSAIM(nn.Module):
    """``SAIM`` on a feature map: (2B, C, H, W) -> tokens (2B, H*W, C) -> SAIM -> back.

    Each pixel of the global row attends to the same pixel of its anomaly partner and vice versa, which is how
    the defect's position travels between the branches.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.saim = SAIM(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        tokens = rearrange(x, "r c h w -> r (h w) c")
        return rearrange(self.saim(tokens), "r (h w) c -> r c h w", h=h, w=w)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the pixels of one row (no cross-row mixing), residual."""

    def __init__(self, dim: int, heads: int = 4, groups: int = 8) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        tokens = rearrange(self.norm(x), "r c h w -> r (h w) c")
        out, _ = self.attn(tokens, tokens, tokens, need_weights=False)
        return x + rearrange(out, "r (h w) c -> r c h w", h=h, w=w)


class PairUNet(nn.Module):
    """Three-level UNet predicting x0 for interleaved pairs; optional SAIM after every residual block.

    Levels (at 24 px): 24 px x c0, 12 px x c1, 6 px x c2 with self-attention; one res block per level on each
    side, each followed by SAIM. forward(x: (2B, 3, H, W) in
    [-1, 1], t: (2B,) int) -> (2B, 3, H, W), rows [g0, a0, g1, a1, ...]; H, W divisible by 4.
    """

    def __init__(self, channels: tuple[int, int, int] = (32, 64, 64), emb_dim: int = 128, saim: bool = True) -> None:
        super().__init__()
        c0, c1, c2 = channels
        self.has_saim = saim
        self.emb_dim = emb_dim
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.branch_emb = nn.Embedding(BRANCHES, emb_dim)
        self.conv_in = nn.Conv2d(3, c0, 3, padding=1)
        self.enc0 = ResBlock(c0, c0, emb_dim)
        self.down0 = nn.Conv2d(c0, c0, 3, stride=2, padding=1)
        self.enc1 = ResBlock(c0, c1, emb_dim)
        self.down1 = nn.Conv2d(c1, c1, 3, stride=2, padding=1)
        self.mid = ResBlock(c1, c2, emb_dim)
        self.attn = SelfAttention(c2)
        self.dec2 = ResBlock(c2 + c2, c2, emb_dim)
        self.up1 = nn.Conv2d(c2, c2, 3, padding=1)
        self.dec1 = ResBlock(c2 + c1, c1, emb_dim)
        self.up0 = nn.Conv2d(c1, c1, 3, padding=1)
        self.dec0 = ResBlock(c1 + c0, c0, emb_dim)
        self.norm_out = nn.GroupNorm(8, c0)
        self.conv_out = nn.Conv2d(c0, 3, 3, padding=1)
        widths = {"enc0": c0, "enc1": c1, "mid": c2, "dec2": c2, "dec1": c1, "dec0": c0}
        self.saims = nn.ModuleDict({k: SpatialSAIM(c) for k, c in widths.items()}) if saim else None

    def _join(self, name: str, h: torch.Tensor) -> torch.Tensor:
        return self.saims[name](h) if self.saims is not None else h

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        branch = branch_ids(x.shape[0], device=x.device)
        emb = self.time_mlp(timestep_embedding(t, self.emb_dim)) + self.branch_emb(branch)
        h0 = self._join("enc0", self.enc0(self.conv_in(x), emb))
        h1 = self._join("enc1", self.enc1(self.down0(h0), emb))
        h2 = self._join("mid", self.mid(self.down1(h1), emb))
        h = self._join("dec2", self.dec2(torch.cat([self.attn(h2), h2], dim=1), emb))
        h = self.up1(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self._join("dec1", self.dec1(torch.cat([h, h1], dim=1), emb))
        h = self.up0(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        h = self._join("dec0", self.dec0(torch.cat([h, h0], dim=1), emb))
        return self.conv_out(F.silu(self.norm_out(h)))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
