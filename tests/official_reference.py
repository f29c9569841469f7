"""An independent re-statement of the authors' attention processor, for parity tests.

It follows the released algorithm step by step (per-frame loop, frame 0 = blend/global, ``temporal_*`` names,
``chained_proc`` on BCM attn1 sites) and shares no code with ``anodiff``. Its ``state_dict`` therefore has
the key layout of the authors' ``pytorch_lora_weights.bin``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class LoRALinearLayer(nn.Module):
    def __init__(self, n_in: int, n_out: int, rank: int) -> None:
        super().__init__()
        self.down = nn.Linear(n_in, rank, bias=False)
        self.up = nn.Linear(rank, n_out, bias=False)

    def forward(self, x):
        return self.up(self.down(x))


class OfficialWeights(nn.Module):
    def __init__(self, hidden: int, kv: int, rank: int, bcm: bool) -> None:
        super().__init__()
        self.to_q_lora = nn.ModuleList([LoRALinearLayer(hidden, hidden, rank) for _ in range(2)])
        self.to_k_lora = nn.ModuleList([LoRALinearLayer(kv, hidden, rank) for _ in range(2)])
        self.to_v_lora = nn.ModuleList([LoRALinearLayer(kv, hidden, rank) for _ in range(2)])
        self.to_out_lora = nn.ModuleList([LoRALinearLayer(hidden, hidden, rank) for _ in range(2)])
        self.temporal_i = nn.Linear(hidden, hidden)
        self.temporal_n = nn.LayerNorm(hidden, eps=1e-6)
        self.temporal_q = nn.Linear(hidden, hidden)
        self.temporal_k = nn.Linear(hidden, hidden)
        self.temporal_v = nn.Linear(hidden, hidden)
        self.temporal_o = nn.Linear(hidden, hidden)
        if bcm:  # the authors create these on every processor, attn2 included
            self.temporal_condition_mlp = nn.Sequential(nn.Linear(hidden, 320), nn.Linear(320, hidden))
            self.temporal_a = nn.Parameter(torch.zeros(1))


class OfficialState:
    def __init__(self) -> None:
        self.mode = "n"  # "n" plain dual, "w" write background, "r" read background
        self.bank: dict[str, torch.Tensor] = {}


class OfficialProcessor:
    def __init__(self, name: str, weights: OfficialWeights, state: OfficialState, is_self: bool, bcm: bool) -> None:
        self.name, self.w, self.state, self.is_self, self.bcm = name, weights, state, is_self, bcm

    def _attend(self, attn, h, ctx, i):
        w = self.w
        q = attn.to_q(h) + w.to_q_lora[i](h)
        k = attn.to_k(ctx) + w.to_k_lora[i](ctx)
        v = attn.to_v(ctx) + w.to_v_lora[i](ctx)
        b, heads = h.shape[0], attn.heads
        q, k, v = (t.view(b, -1, heads, t.shape[-1] // heads).transpose(1, 2) for t in (q, k, v))
        o = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, heads * q.shape[-1])
        return attn.to_out[1](attn.to_out[0](o) + w.to_out_lora[i](o))

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        st, w = self.state, self.w
        ctx_all = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if st.mode == "w":
            if self.bcm and self.is_self:
                st.bank[self.name] = hidden_states
            return self._attend(attn, hidden_states, ctx_all, 0)
        h = rearrange(hidden_states, "(b f) n c -> f b n c", f=2)
        ctx = rearrange(ctx_all, "(b f) n c -> f b n c", f=2)
        outs = []
        for i in range(2):
            c = ctx[i]
            if st.mode == "r" and self.bcm and self.is_self and i == 0:
                c = (1 - w.temporal_a) * c + w.temporal_a * w.temporal_condition_mlp(st.bank[self.name])
            outs.append(self._attend(attn, h[i], c, i))
        out = rearrange(torch.stack(outs), "f b n c -> (b f) n c")
        x = w.temporal_i(w.temporal_n(out))
        tokens = x.shape[1]
        x = rearrange(x, "(b f) n c -> (b n) f c", f=2)
        x = F.scaled_dot_product_attention(w.temporal_q(x), w.temporal_k(x), w.temporal_v(x))
        x = rearrange(w.temporal_o(x), "(b n) f c -> (b f) n c", n=tokens)
        return out + x


def install_official(
    unet: nn.Module, rank: int, bcm: bool, seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[OfficialState, dict[str, torch.Tensor]]:
    """Put reference processors with random weights on every attention; return the state and the authors' keys
    (float32 values; the processors compute in ``dtype``, e.g. float64 for a rounding-free reference)."""
    g = torch.Generator().manual_seed(seed)
    state, processors, official = OfficialState(), {}, {}
    for name, module in unet.named_modules():
        if not hasattr(module, "set_processor"):
            continue
        hidden, kv = module.to_q.in_features, module.to_k.in_features
        weights = OfficialWeights(hidden, kv, rank, bcm)
        with torch.no_grad():
            for p in weights.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            if bcm:
                weights.temporal_a.fill_(0.25)
        is_self = name.endswith("attn1")
        weights.to(dtype)
        processors[f"{name}.processor"] = OfficialProcessor(name, weights, state, is_self, bcm)
        chained = ".chained_proc" if (bcm and is_self) else ""
        for key, value in weights.state_dict().items():
            official[f"unet.{name}.processor{chained}.{key}"] = value.float()
    unet.set_attn_processor(processors)
    return state, official


def official_text_lora(text_encoder: nn.Module, rank: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Authors' text-encoder LoRA keys (diffusers 0.18 naming) with random values."""
    g = torch.Generator().manual_seed(seed)
    layers = text_encoder.config.num_hidden_layers
    hidden = text_encoder.config.hidden_size
    out = {}
    for i in range(layers):
        for proj in ("q", "k", "v", "out"):
            base = f"text_encoder.text_model.encoder.layers.{i}.self_attn.to_{proj}_lora"
            out[f"{base}.down.weight"] = torch.randn(rank, hidden, generator=g) * 0.05
            out[f"{base}.up.weight"] = torch.randn(hidden, rank, generator=g) * 0.05
    return out
