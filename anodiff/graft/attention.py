"""The graft attention (O2MAG's rules 1-3, one-shot-reference.md), written once for every adapter.

Every UNet call holds ``chunks`` chunks (uncond and/or cond) of three rows each, ``[normal, reference, target]``.
q, k, v come in projected, ``(rows, tokens, heads * dim)``; the diffusers processor and the ComfyUI attn1/attn2
patches both call ``graft_attention``. The normal and reference rows always attend to themselves.

Masks reach the token grid by nearest interpolation or by adaptive max pooling, as O2MAG's code does per rule.
A mask that loses every cell at a coarse grid would make O2MAG's softmax a uniform average over all keys; here
instead rule 1 falls back to the max-pooled reference mask (never empty for a non-empty mask), and a background
term whose key set is empty is zero, which is exact since its blend weight is then zero everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange

from .config import GraftSettings

NORMAL, REFERENCE, TARGET = 0, 1, 2
BRANCHES = 3


def token_grid(latent_hw: tuple[int, int], tokens: int) -> tuple[int, int]:
    """The (h, w) of the token grid with ``tokens`` cells: the latent halved (rounding up) until it fits."""
    h, w = latent_hw
    while h * w > tokens and h > 1:
        h, w = (h + 1) // 2, (w + 1) // 2
    if h * w != tokens:
        raise ValueError(f"{tokens} attention tokens do not match a latent of {latent_hw} halved")
    return h, w


def nearest_mask(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(H, W) -> (h * w,) by nearest interpolation (O2MAG's ``F.interpolate`` default)."""
    return F.interpolate(mask[None, None].float(), size=grid, mode="nearest").flatten()


def max_pool_mask(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(H, W) -> (h * w,) by adaptive max pooling: a cell is on when any pixel under it is."""
    return F.adaptive_max_pool2d(mask[None, None].float(), grid).flatten()


@dataclass
class GraftMasks:
    """The reference and target masks, (H, W) in {0, 1} on the UNet's device, at every token grid (cached)."""

    reference: torch.Tensor
    target: torch.Tensor
    latent_hw: tuple[int, int]
    _cache: dict = field(default_factory=dict, repr=False)

    def at(self, tokens: int) -> dict[str, torch.Tensor]:
        if tokens not in self._cache:
            grid = token_grid(self.latent_hw, tokens)
            ref_near, ref_max = nearest_mask(self.reference, grid), max_pool_mask(self.reference, grid)
            self._cache[tokens] = {
                "ref_near": (ref_near if ref_near.any() else ref_max) > 0.5,
                "ref_max": ref_max > 0.5,
                "tgt_near": nearest_mask(self.target, grid),
                "tgt_max": max_pool_mask(self.target, grid),
            }
        return self._cache[tokens]


@dataclass
class GraftPass:
    """What one UNet call needs: the sampling step, which chunks are cond (``cond[c]``), the masks, the defect
    words' token positions in the target prompt, the settings."""

    step: int
    cond: tuple[bool, ...]
    masks: GraftMasks
    defect_tokens: tuple[int, ...] = ()
    settings: GraftSettings = field(default_factory=GraftSettings)


def masked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor, tau: float = 1.0
) -> torch.Tensor:
    """softmax(q k^T / (sqrt(d) tau)) v over the keys where ``keep`` (n_k,) is True; zeros when none is."""
    if not bool(keep.any()):
        return q.new_zeros(*q.shape[:-1], v.shape[-1])
    scale = q.shape[-1] ** -0.5 / tau
    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep.view(1, 1, -1), scale=scale)


def early_graft(q, k, v, m: dict[str, torch.Tensor]) -> torch.Tensor:
    """Rule 1 (steps [0, early_steps)), per head ``(heads, n, d)`` rows of one chunk: the reference's own
    self-attention over its defect keys inside the target mask, the normal's own over keys outside it elsewhere."""
    fg = masked_attention(q[REFERENCE], k[REFERENCE], v[REFERENCE], m["ref_near"])
    bg = masked_attention(q[NORMAL], k[NORMAL], v[NORMAL], m["tgt_near"] < 0.5)
    w = m["tgt_near"][:, None]
    return fg * w + bg * (1 - w)


def late_graft(q, k, v, m: dict[str, torch.Tensor], tau: float) -> torch.Tensor:
    """Rule 2: the target's queries read the reference's keys/values inside the reference mask (sharpened by
    ``tau``) inside the target mask, the normal's outside the target mask elsewhere."""
    fg = masked_attention(q[TARGET], k[REFERENCE], v[REFERENCE], m["ref_max"], tau)
    bg = masked_attention(q[TARGET], k[NORMAL], v[NORMAL], m["tgt_near"] < 0.5)
    w = m["tgt_max"][:, None]
    return fg * w + bg * (1 - w)


def defect_word_gain(q, k, v, gate: torch.Tensor, tokens: tuple[int, ...], gain: float) -> torch.Tensor:
    """Rule 3, the target's cross-attention: probabilities to the defect words times ``gain`` where ``gate``
    (n,) is on, each row renormalised to sum 1."""
    probs = torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1)
    eq = torch.ones(k.shape[-2], dtype=probs.dtype, device=probs.device)
    eq[list(tokens)] = gain
    scale = 1 + gate.to(probs.dtype)[:, None] * (eq[None, :] - 1)
    probs = probs * scale
    return (probs / probs.sum(-1, keepdim=True)) @ v


def _rule(run: GraftPass, is_self: bool, transformer_index: int) -> str | None:
    s = run.settings
    if is_self:
        if run.step < s.early_steps:
            return "early"
        if run.step >= s.start_step and s.start_layer <= transformer_index < s.end_layer:
            return "late"
        return None
    first, last = s.cross_steps
    return "cross" if run.defect_tokens and first <= run.step < last else None


def graft_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    run: GraftPass | None,
    is_self: bool,
    transformer_index: int,
) -> torch.Tensor:
    """Attention of one site on projected ``(rows, n, heads * d)`` q, k, v, rows ``chunks x [normal, reference,
    target]``; the graft rules replace the target rows' output where they apply."""
    q, k, v = (rearrange(t, "r n (h d) -> r h n d", h=heads) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    rule = None if run is None else _rule(run, is_self, transformer_index)
    if rule is not None:
        chunks = len(run.cond)
        if q.shape[0] != chunks * BRANCHES:
            raise ValueError(
                f"graft attention: {q.shape[0]} rows, expected {chunks} chunk(s) of [normal, reference, target]"
            )
        m = run.masks.at(q.shape[2])
        rows = []
        for c in range(chunks):
            part = slice(c * BRANCHES, (c + 1) * BRANCHES)
            qc, kc, vc = q[part], k[part], v[part]
            if rule == "early":
                target = early_graft(qc, kc, vc, m)
            elif rule == "late":
                target = late_graft(qc, kc, vc, m, run.settings.tau)
            elif run.cond[c]:
                target = defect_word_gain(
                    qc[TARGET], kc[TARGET], vc[TARGET], m["tgt_near"], run.defect_tokens, run.settings.defect_gain
                )
            else:
                target = out[c * BRANCHES + TARGET]
            rows.append(torch.cat([out[part][:TARGET], target[None]]))
        out = torch.cat(rows)
    return rearrange(out, "r h n d -> r n (h d)")
