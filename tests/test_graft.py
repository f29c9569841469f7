"""The training-free graft mode (issue 24): the attention against a direct formulation written out here, the
round trip of inversion and sampling, the embedding cache, the tightened mask and bad inputs."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_diffusers import randomize_, tiny_unet

from anodiff.graft.attention import GraftMasks, GraftPass
from anodiff.graft.config import GraftSettings
from anodiff.graft.processor import grafted
from anodiff.model.sites import SD15_BY_DIFFUSERS

H = W = 32  # image side; the tiny VAE halves it: a 16x16 latent, token grids 16, 8, 4, 2
LATENT = (16, 16)


def box(top: int, bottom: int, left: int, right: int, shape=(H, W)) -> torch.Tensor:
    m = torch.zeros(shape)
    m[top:bottom, left:right] = 1
    return m


# Both contain pixel (16, 16), so neither mask vanishes at the 2x2 grid under nearest interpolation.
REF_MASK, TGT_MASK = box(10, 26, 8, 24), box(4, 20, 12, 30)


def _grid(n: int) -> tuple[int, int]:
    side = math.isqrt(n)
    return side, side


def _masked_logits(mask: torch.Tensor) -> torch.Tensor:
    """O2MAG's restriction: +mask on included keys (value 1), finfo.min on the others."""
    return mask.masked_fill(mask == 0, torch.finfo(torch.float32).min)


def direct_attention(attn, x, ctx, step, index, is_self, tokens, settings):
    """The graft rules written out per head with O2MAG's additive masks, the ln(1.1) re-weight and tau; the normal
    and reference rows plain attention. Rows [uncond n, r, t; cond n, r, t]."""
    kv = x if is_self else ctx
    q, k, v = attn.to_q(x), attn.to_k(kv), attn.to_v(kv)
    heads = attn.heads
    d = q.shape[-1] // heads
    q, k, v = (t.view(t.shape[0], t.shape[1], heads, d).transpose(1, 2) for t in (q, k, v))
    s = d**-0.5
    out = torch.softmax(q @ k.transpose(-1, -2) * s, -1) @ v
    grid = _grid(q.shape[2])
    near = lambda m: torch.nn.functional.interpolate(m[None, None], size=grid).flatten()
    pool = lambda m: torch.nn.functional.adaptive_max_pool2d(m[None, None], grid).flatten()
    for c in range(2):
        n, r, t = 3 * c, 3 * c + 1, 3 * c + 2
        if is_self and step < settings.early_steps:
            mr, mt = near(REF_MASK), near(TGT_MASK)
            fg = torch.softmax(q[r] @ k[r].transpose(-1, -2) * s + _masked_logits(mr), -1) @ v[r]
            bg_bias = mt.masked_fill(mt == 1, torch.finfo(torch.float32).min)
            bg = torch.softmax(q[n] @ k[n].transpose(-1, -2) * s + bg_bias, -1) @ v[n]
            out[t] = fg * mt[:, None] + bg * (1 - mt[:, None])
        elif is_self and step >= 4 and 9 <= index < 16:
            mr, mt_near, mt = pool(REF_MASK), near(TGT_MASK), pool(TGT_MASK)
            fg_logits = (q[t] @ k[r].transpose(-1, -2) * s + _masked_logits(mr) + mr * math.log(1.1)) / 0.7
            fg = torch.softmax(fg_logits, -1) @ v[r]
            bg_bias = mt_near.masked_fill(mt_near == 1, torch.finfo(torch.float32).min)
            bg = torch.softmax(q[t] @ k[n].transpose(-1, -2) * s + bg_bias, -1) @ v[n]
            out[t] = fg * mt[:, None] + bg * (1 - mt[:, None])
        elif not is_self and c == 1 and 20 <= step < 40:
            probs = torch.softmax(q[t] @ k[t].transpose(-1, -2) * s, -1)
            eq = torch.ones(k.shape[2])
            eq[list(tokens)] = 100.0
            probs = probs * (1 + near(TGT_MASK)[:, None] * (eq[None] - 1))
            out[t] = probs / probs.sum(-1, keepdim=True) @ v[t]
    out = out.transpose(1, 2).reshape(x.shape[0], x.shape[1], heads * d)
    return attn.to_out[1](attn.to_out[0](out))


@pytest.mark.parametrize("step", [0, 10, 25])
def test_graft_attention_equals_direct_formulation(step, one_torch_thread):
    unet = randomize_(tiny_unet(), seed=3, std=0.08)
    settings, tokens = GraftSettings(), (5, 6)
    seen = {}
    names = {m: n for n, m in unet.named_modules() if n in SD15_BY_DIFFUSERS}

    def hook(module, args, kwargs, output):
        seen[names[module]] = (
            args[0] if args else kwargs["hidden_states"],
            kwargs.get("encoder_hidden_states"),
            output,
        )

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in names]
    g = torch.Generator().manual_seed(0)
    x, ctx = torch.randn(6, 4, *LATENT, generator=g), torch.randn(6, 77, 32, generator=g)
    run = GraftPass(step, (False, True), GraftMasks(REF_MASK, TGT_MASK, LATENT), tokens, settings)
    with torch.no_grad(), grafted(unet):
        unet(x, torch.tensor(500), ctx, cross_attention_kwargs={"graft": run})
        worst = {}
        for name, (hidden, context, output) in seen.items():
            site = SD15_BY_DIFFUSERS[name]
            attn = unet.get_submodule(name)
            ref = direct_attention(attn, hidden, context, step, site.transformer_index, site.is_self, tokens, settings)
            worst[name] = (output - ref).abs().max().item()
    for h in handles:
        h.remove()
    assert len(worst) == 32
    assert max(worst.values()) <= 1e-5, max(worst.items(), key=lambda kv: kv[1])
    # the rules changed something: the target rows differ from plain attention at this step
    plain = {}
    with torch.no_grad():
        for name, (hidden, context, output) in seen.items():
            plain[name] = (unet.get_submodule(name)(hidden, encoder_hidden_states=context) - output).abs().max().item()
    assert max(plain.values()) > 1e-3


def test_grafted_restores_processors(one_torch_thread):
    unet = tiny_unet()
    before = {k: type(v) for k, v in unet.attn_processors.items()}
    with pytest.raises(RuntimeError), grafted(unet):
        raise RuntimeError("interrupted")
    assert {k: type(v) for k, v in unet.attn_processors.items()} == before
