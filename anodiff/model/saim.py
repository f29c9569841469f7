"""SAIM, the Self-Attention Interaction Module, as the released code computes it.

After every attention (self and cross), each spatial token of the global branch and the token at the same
position in the anomaly branch form a length-2 sequence; a single-head attention over it is added residually
to the attention output. Official: ``LoRAAttnProcessor2_0`` in ``dual-interrelated_diff/diffusers/models/
attention_processor.py``, its ``temporal_{n,i,q,k,v,o}`` layers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .lora import cast_like, check_activation
from .pairs import ANOMALY, BRANCHES, GLOBAL, check_rows


def _linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, cast_like(layer.weight, x), cast_like(layer.bias, x))


class SAIM(nn.Module):
    """Cross-branch attention per token: LayerNorm(eps 1e-6) -> in -> single-head attn over 2 -> out.

    zero_init_out: our option, not the authors' (they keep PyTorch's default init, which perturbs the
    pretrained UNet at step 0). Zeroing the out-linear makes a fresh SAIM an exact identity, which keeps
    the first fine-tuning steps on the pretrained manifold.
    """

    def __init__(self, dim: int, zero_init_out: bool = False) -> None:
        super().__init__()
        self.dim = dim
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.proj_in = nn.Linear(dim, dim)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.proj_out = nn.Linear(dim, dim)
        if zero_init_out:
            nn.init.zeros_(self.proj_out.weight)
            nn.init.zeros_(self.proj_out.bias)

    def delta(self, attn_out: torch.Tensor) -> torch.Tensor:
        """The residual term. attn_out: (R, N, C), rows interleaved [g0, a0, g1, a1, ...]; R even.

        The attention over two keys is computed as what it is, a sigmoid of the score difference, on the
        (pairs, 2, tokens, C) view: no regrouping copies and no tiny attention calls; the value linear runs after
        the mixing (the two weights sum to one). Same five linears and gradients as the authors' form (the key
        bias, which cancels in the score difference, still takes part, so data-parallel training sees every
        parameter used).
        """
        check_activation(attn_out, self.dim, "SAIM input")
        if attn_out.dim() != 3:
            raise ValueError(f"SAIM input: expected (rows, tokens, {self.dim}), got {tuple(attn_out.shape)}")
        check_rows(attn_out.shape[0], what="SAIM input")
        x = F.layer_norm(
            attn_out,
            (self.dim,),
            cast_like(self.norm.weight, attn_out),
            cast_like(self.norm.bias, attn_out),
            self.norm.eps,
        )
        u = _linear(self.proj_in, x).view(-1, BRANCHES, *attn_out.shape[1:])  # (pairs, 2, N, C)
        du = u[:, ANOMALY] - u[:, GLOBAL]
        k = _linear(self.to_k, u)
        dk = (k[:, ANOMALY] - k[:, GLOBAL]) / math.sqrt(self.dim)
        score = (_linear(self.to_q, u) * dk.unsqueeze(1)).sum(-1, keepdim=True)  # q_i . (k_a - k_g)
        to_anomaly, to_global = torch.sigmoid(score[:, GLOBAL]), torch.sigmoid(-score[:, ANOMALY])  # partner weights
        mixed = torch.stack([u[:, GLOBAL] + to_anomaly * du, u[:, ANOMALY] - to_global * du], dim=1)
        return _linear(self.proj_out, _linear(self.to_v, mixed)).view_as(attn_out)

    def forward(self, attn_out: torch.Tensor, strength: float = 1.0, inplace: bool = False) -> torch.Tensor:
        """``inplace`` is accepted so a trainable SAIM can stand where a ``FoldedSAIM`` is called; it never writes
        in place (autograd needs ``attn_out``)."""
        return attn_out + strength * self.delta(attn_out)
