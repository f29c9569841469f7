"""BCM, the Background Compensation Module, as the released code computes it.

A "write" pass runs the UNet on a background latent (object blacked out, noised to the same t) and stores
every self-attention input. In the main "read" pass the global rows' key/value source becomes
``(1 - a) * h + a * MLP(h_bg)``; queries, anomaly rows, cross-attention and SAIM are untouched.
Official: ``bcm-dual-interrelated_diff``: ``ReferenceOnlyAttnProc`` and ``temporal_condition_mlp``/``temporal_a``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .lora import cast_like, check_activation
from .pairs import interleave, split

BCM_HIDDEN = 320


class BackgroundCompensation(nn.Module):
    """MLP C -> 320 -> C with biases and no activation (the official ReLU is commented out); ``a`` starts at 0."""

    def __init__(self, dim: int, hidden: int = BCM_HIDDEN) -> None:
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.Linear(hidden, dim))
        self.a = nn.Parameter(torch.zeros(1))

    def project(self, background: torch.Tensor) -> torch.Tensor:
        x = background
        for layer in self.mlp:
            x = F.linear(x, cast_like(layer.weight, x), cast_like(layer.bias, x))
        return x

    def kv_source(self, hidden: torch.Tensor, background: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        """Key/value source for a self-attention with background mixed into the global rows.

        hidden: (R, N, C) interleaved pairs; background: (R/2, N, C) stored write-pass tokens, one row per
        pair in order, or (1, N, C) shared by all pairs. ``strength`` scales ``a`` (1 = as trained).
        """
        check_activation(hidden, self.dim, "BCM hidden states")
        check_activation(background, self.dim, "BCM background tokens")
        glob, anomaly = split(hidden)
        if background.shape[1] != hidden.shape[1]:
            raise ValueError(
                f"BCM: background has {background.shape[1]} tokens but the image has {hidden.shape[1]}; "
                "the background latent must have the same size as the generated latent"
            )
        if background.shape[0] not in (1, glob.shape[0]):
            raise ValueError(
                f"BCM: need one background row per pair ({glob.shape[0]}) or a single shared row, "
                f"got {background.shape[0]}"
            )
        a = cast_like(self.a, hidden) * strength
        mixed = (1 - a) * glob + a * self.project(background.to(hidden.dtype))
        return interleave(mixed, anomaly)


UNetCall = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", str, dict], torch.Tensor]
"""(latents, timesteps, context, mode "write" or "read", bank) -> the host UNet's output for that pass."""


def write_then_read(
    unet: UNetCall,
    x: torch.Tensor,
    t: torch.Tensor,
    context: torch.Tensor | None,
    background: torch.Tensor,
    background_t: torch.Tensor | None = None,
    background_context: torch.Tensor | None = None,
) -> torch.Tensor:
    """BCM's two UNet passes, for every host (diffusers ``DualUNet``, the ComfyUI sampler patch, training).

    The write pass runs ``background`` (B, 4, h, w), already noised, at each pair's global timestep with its
    global prompt (rows 0, 2, ... of ``t`` and ``context`` unless given) and fills ``bank``; the read pass runs the
    pairs ``x`` (2B, ...) mixing the stored tokens into the global rows. Returns the read pass's output."""
    bank: dict[str, torch.Tensor] = {}
    if background_t is None:
        background_t = t[0::2] if t.dim() else t
    if background_context is None and context is not None:
        background_context = context[0::2]
    unet(background, background_t, background_context, "write", bank)
    return unet(x, t, context, "read", bank)
