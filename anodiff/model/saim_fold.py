"""SAIM folded for inference: two CxC products per token instead of five.

SAIM per token pair (x_g, x_a) after its LayerNorm: u = W_in x + b_in, q/k/v = W_{q,k,v} u + b, a two-key softmax,
then W_out. With A = W_q W_in, B = W_k W_in (biases a, b) the score of token i against key j is
``(A x_i + a)·(B x_j + b) / sqrt(C)``; in a softmax over j every term that does not depend on j cancels, so only
``x_i^T A^T B x_j + a^T B x_j`` is left: one CxC bilinear form ``y_i = x_i M + m``. With two keys the softmax is a
sigmoid of the score difference ``y_i·(x_partner - x_i)``. The value and out linears collapse into one affine map
``V = W_out W_v W_in`` (the weights sum to 1, so the biases fold into one vector). Training keeps the unfolded
``SAIM``; the fold is exact up to rounding and is computed in float64.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .lora import cast_like, check_activation
from .pairs import check_rows
from .saim import SAIM


class FoldedSAIM(nn.Module):
    """Inference form of one ``SAIM``; same ``delta``/``forward`` contract, not trainable.

    The LayerNorm's scale g and shift b are folded too (x = n*g + b with n the plain normalised token): the score
    difference is ``(n W_qk' + c_qk)·(n_partner - n)`` with ``W_qk' = diag(g) M diag(g)``, and the output
    ``z W_vo' + c_vo`` with ``W_vo' = diag(g) V^T`` for ``z = n + p (n_partner - n)``.
    """

    def __init__(
        self, dim: int, eps: float = 1e-6, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps
        new = {"device": device, "dtype": dtype}
        self.qk = nn.Parameter(torch.zeros(dim, dim, **new), requires_grad=False)  # y = n @ qk + qk_bias
        self.qk_bias = nn.Parameter(torch.zeros(dim, **new), requires_grad=False)
        self.vo = nn.Parameter(torch.zeros(dim, dim, **new), requires_grad=False)  # out = z @ vo + vo_bias
        self.vo_bias = nn.Parameter(torch.zeros(dim, **new), requires_grad=False)

    @classmethod
    def from_saim(cls, saim: SAIM) -> FoldedSAIM:
        """Fold ``saim``'s LayerNorm and five linears (in float64), keeping its device and dtype."""
        ref = saim.proj_in.weight
        d = {name: p.detach().to(device=ref.device, dtype=torch.float64) for name, p in saim.named_parameters()}
        w_in, b_in = d["proj_in.weight"], d["proj_in.bias"]
        gamma, beta = d["norm.weight"], d["norm.bias"]
        a_w, a_b = d["to_q.weight"] @ w_in, d["to_q.weight"] @ b_in + d["to_q.bias"]
        b_w = d["to_k.weight"] @ w_in
        qk = a_w.T @ b_w / math.sqrt(saim.dim)  # score(i, j) = x_i qk x_j + m x_j + (terms without j)
        m = b_w.T @ a_b / math.sqrt(saim.dim)
        v_w = d["proj_out.weight"] @ d["to_v.weight"] @ w_in
        v_b = d["proj_out.weight"] @ (d["to_v.weight"] @ b_in + d["to_v.bias"]) + d["proj_out.bias"]
        folded = cls(saim.dim, saim.norm.eps, device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            for name, value in (
                ("qk", gamma[:, None] * qk * gamma[None, :]),
                ("qk_bias", (beta @ qk + m) * gamma),
                ("vo", gamma[:, None] * v_w.T),
                ("vo_bias", beta @ v_w.T + v_b),
            ):
                getattr(folded, name).data = value.to(ref.dtype)
        return folded

    def _normalised(self, attn_out: torch.Tensor) -> torch.Tensor:
        check_activation(attn_out, self.dim, "SAIM input")
        if attn_out.dim() != 3:
            raise ValueError(f"SAIM input: expected (rows, tokens, {self.dim}), got {tuple(attn_out.shape)}")
        check_rows(attn_out.shape[0], what="SAIM input")
        return F.layer_norm(attn_out, (self.dim,), None, None, self.eps)

    def _partner_weights(self, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(e = n_anomaly - n_global, p_global, p_anomaly) for pairs (P, 2, N, C): each row's attention weight on
        its partner. The score difference of the global row is ``(n_g W + c)·e = n_g·(e W^T) + c·e`` and that of
        the anomaly row ``-(n_a·(e W^T) + c·e)``, so the CxC product runs on e, half the rows."""
        glob, anomaly = pairs[:, 0], pairs[:, 1]
        e = anomaly - glob
        flat = e.reshape(-1, self.dim)
        w = torch.mm(flat, cast_like(self.qk, e).T).view_as(e)
        shared = torch.mv(flat, cast_like(self.qk_bias, e)).view(*e.shape[:-1], 1)
        d_glob = (glob * w).sum(-1, keepdim=True)
        d_anomaly = w.mul_(anomaly).sum(-1, keepdim=True)
        return e, torch.sigmoid(d_glob + shared), torch.sigmoid(-(d_anomaly + shared))

    def delta(self, attn_out: torch.Tensor) -> torch.Tensor:
        """The residual term. attn_out: (R, N, C), rows interleaved [g0, a0, g1, a1, ...]; R even."""
        pairs = self._normalised(attn_out).view(-1, 2, *attn_out.shape[1:])
        e, p_glob, p_anomaly = self._partner_weights(pairs)
        z = torch.stack([pairs[:, 0] + p_glob * e, pairs[:, 1] - p_anomaly * e], dim=1).view(-1, self.dim)
        return torch.addmm(cast_like(self.vo_bias, z), z, cast_like(self.vo, z)).view_as(attn_out)

    def forward(self, attn_out: torch.Tensor, strength: float = 1.0, inplace: bool = False) -> torch.Tensor:
        """``attn_out + strength * delta``. ``inplace`` (for a fresh attention output nobody else holds, without
        autograd) saves two full-size passes and allocations: the output GEMM accumulates into ``attn_out``."""
        if not inplace or (torch.is_grad_enabled() and attn_out.requires_grad):
            return attn_out + strength * self.delta(attn_out)
        n = self._normalised(attn_out)
        pairs = n.view(-1, 2, *attn_out.shape[1:])
        e, p_glob, p_anomaly = self._partner_weights(pairs)
        pairs[:, 0].addcmul_(p_glob, e)
        pairs[:, 1].addcmul_(p_anomaly, e, value=-1.0)
        out = attn_out if attn_out.is_contiguous() else attn_out.contiguous()
        flat = out.view(-1, self.dim)
        flat.addmm_(n.view(-1, self.dim), cast_like(self.vo, n), alpha=strength)
        flat.add_(cast_like(self.vo_bias, n), alpha=strength)
        return out


def inference_adapter(adapter: nn.Module, dtype: torch.dtype | None = None, device: torch.device | str | None = None):
    """A frozen copy of a ``DualAdapter`` with every SAIM folded, in ``dtype`` on ``device``.

    The unfolded SAIMs are not copied (the fold replaces them during the copy), so the copy holds two CxC
    matrices per site instead of five; the fold runs in float64 from ``adapter``'s own precision.
    """
    import copy

    memo: dict[int, nn.Module] = {}
    for layer in adapter.values():
        if isinstance(layer.saim, SAIM):
            memo[id(layer.saim)] = FoldedSAIM.from_saim(layer.saim)
    copied = copy.deepcopy(adapter, memo)
    return copied.to(device=device, dtype=dtype).requires_grad_(False).eval()


def _weights_stamp(saim: SAIM) -> tuple:
    """Where the weights are and how often they were changed in place (an optimizer step, ``load_state_dict``).
    Inference tensors (made under ``torch.inference_mode()``) keep no version counter; they cannot be changed in
    place outside inference mode, and a pipeline never changes its weights in place, so their storage stands."""
    return tuple((p.data_ptr(), -1 if p.is_inference() else p._version) for p in saim.parameters())


class FoldCache:
    """Folded copies of one SAIM per (device, dtype) it runs in, refolded when its weights change. Lets a
    training-time module fold at inference. Entries of weights that changed or moved are dropped, not kept."""

    def __init__(self) -> None:
        self._stamp: tuple | None = None
        self._entries: dict[tuple[torch.device, torch.dtype], FoldedSAIM] = {}

    def get(self, saim: SAIM | FoldedSAIM, like: torch.Tensor) -> FoldedSAIM:
        if isinstance(saim, FoldedSAIM):
            return saim
        stamp = _weights_stamp(saim)
        if stamp != self._stamp:  # new weights: every fold of the old ones is stale
            self._stamp, self._entries = stamp, {}
        key = (like.device, like.dtype)
        if key not in self._entries:
            self._entries[key] = FoldedSAIM.from_saim(saim).to(device=like.device, dtype=like.dtype)
        return self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)
