"""diffusers adapter: the graft attention on all 32 attentions of an SD1.5 UNet, for as long as a ``with`` lasts.

The per-call ``GraftPass`` travels in ``cross_attention_kwargs={"graft": ...}`` (as the dual model's ``UNetPass``
does); without it a processor runs ordinary attention, so the inversion and the embedding optimisation use the
same UNet. The processors the UNet had before are put back on exit, whatever happens inside.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..model.sites import SD15_BY_DIFFUSERS, AttnSite
from ..sd15.processor import _attention_modules
from .attention import GraftPass, graft_attention


class GraftAttnProcessor:
    """Drop-in for diffusers' ``AttnProcessor2_0`` on one SD1.5 attention site."""

    def __init__(self, site: AttnSite) -> None:
        self.site = site

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        graft: GraftPass | None = None,
        **kwargs,
    ) -> torch.Tensor:
        if attention_mask is not None:
            raise ValueError(f"{self.site.diffusers}: the graft mode takes no attention mask")
        residual = hidden_states
        kv = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            kv = attn.norm_encoder_hidden_states(kv)
        q, k, v = attn.to_q(hidden_states), attn.to_k(kv), attn.to_v(kv)
        out = graft_attention(q, k, v, attn.heads, graft, self.site.is_self, self.site.transformer_index)
        out = attn.to_out[1](attn.to_out[0](out.to(q.dtype)))
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


@contextmanager
def grafted(unet: nn.Module) -> Iterator[nn.Module]:
    """The UNet with graft processors on its 32 attentions inside the ``with``, its own processors after."""
    modules = _attention_modules(unet)
    if set(modules) != set(SD15_BY_DIFFUSERS):
        odd = min(set(modules) ^ set(SD15_BY_DIFFUSERS))
        raise ValueError(f"the graft mode needs an SD1.5 UNet; attention {odd!r} does not fit SD1.5's block layout")
    before = dict(unet.attn_processors)
    unet.set_attn_processor({f"{name}.processor": GraftAttnProcessor(SD15_BY_DIFFUSERS[name]) for name in modules})
    try:
        yield unet
    finally:
        unet.set_attn_processor(before)
