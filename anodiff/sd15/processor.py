"""diffusers adapter: an attention processor that runs a ``DualAttention`` inside ``UNet2DConditionModel``.

The per-call settings travel in ``cross_attention_kwargs={"dual": UNetPass(...)}`` rather than in
processor state, so gradient checkpointing recomputes each block with the settings it first ran with.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from ..model.bcm import write_then_read
from ..model.dual import DualAdapter, DualAttention
from ..model.lora import BranchLoRA
from ..model.lora_fused import add_branch_lora, merge_pays, merged_branch_linear
from ..model.pairs import check_rows, row_branches
from ..model.saim_fold import FoldCache
from ..model.sites import SD15_BY_DIFFUSERS, AttnSite

MODES = ("dual", "write", "read")


@dataclass(frozen=True)
class UNetPass:
    """How one UNet call runs (``DualUNet.forward(unet_pass=...)``).

    mode: "dual" (both branches, SAIM), "write" (BCM background pass: global LoRA on every row, no SAIM,
    self-attention inputs stored in ``bank``), "read" (dual, plus BCM mixing from ``bank``).
    chunks: how many [g, a, ...] chunks the batch holds (2 for [uncond; cond] CFG batches).
    """

    mode: str = "dual"
    chunks: int = 1
    saim: bool = True
    strengths: tuple[float, float] = (1.0, 1.0)
    bcm_strength: float = 1.0
    bank: dict[str, torch.Tensor] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"UNetPass.mode must be one of {MODES}, got {self.mode!r}")


class DualAttnProcessor:
    """Drop-in for diffusers' ``AttnProcessor2_0`` on one SD1.5 attention site.

    Whenever gradients are off (inference) SAIM runs folded (``anodiff.model.saim_fold``) and the LoRA deltas are added
    inside their GEMMs (``model.lora_fused``); training keeps the unfolded SAIM and ``BranchLoRA``'s own forward.
    ``fold_saim=False`` keeps SAIM unfolded at inference too (benchmarks, tests).
    """

    def __init__(self, site: AttnSite, layer: DualAttention, fold_saim: bool = True) -> None:
        self.site, self.layer, self.fold_saim = site, layer, fold_saim
        self._folds = FoldCache()
        self._scales: dict[tuple, torch.Tensor] = {}

    def _project(
        self, linear: nn.Module, x: torch.Tensor, lora: BranchLoRA, ids: torch.Tensor, id_list: list[int], strengths
    ) -> torch.Tensor:
        """Inference: ``linear(x)`` plus the branch LoRA, merged into the weights where that is cheaper (many
        tokens: self-attention at 64x64 and 32x32), else added inside the rank-r GEMM."""
        key = (tuple(float(v) for v in strengths), lora.scale, x.device, x.dtype)
        if key not in self._scales:  # strength x alpha/rank per branch, on the device once
            self._scales[key] = (torch.tensor(key[0], dtype=torch.float32) * lora.scale).to(x)
        scale = self._scales[key]
        plain = type(linear) is nn.Linear and x.dim() == 3 and linear.weight.dtype == x.dtype
        if plain and merge_pays(x.shape[0] * x.shape[1], lora.in_features, lora.out_features):
            return merged_branch_linear(x, linear.weight, linear.bias, id_list, lora.down, lora.up, scale)
        return add_branch_lora(linear(x), x, ids, lora.down, lora.up, scale)

    def __call__(
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        dual: UNetPass | None = None,
        **kwargs,
    ) -> torch.Tensor:
        run = dual or UNetPass()
        layer = self.layer
        if hidden_states.dim() != 3:
            raise ValueError(
                f"{self.site.diffusers}: expected (rows, tokens, channels), got {tuple(hidden_states.shape)}"
            )
        rows = hidden_states.shape[0]
        write = run.mode == "write"
        ids, id_list = row_branches(rows, run.chunks, write, hidden_states.device)
        residual = hidden_states
        kv = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            kv = attn.norm_encoder_hidden_states(kv)
        if layer.bcm is not None and encoder_hidden_states is None:
            if write:
                run.bank[self.site.diffusers] = hidden_states
            elif run.mode == "read":
                if self.site.diffusers not in run.bank:
                    raise RuntimeError(f"{self.site.diffusers}: BCM read pass without a write pass on the background")
                kv = layer.bcm.kv_source(hidden_states, run.bank[self.site.diffusers], run.bcm_strength)

        s = run.strengths
        fast = not torch.is_grad_enabled()  # inference: LoRA adds fused into their GEMMs, SAIM folded
        if fast:
            query = self._project(attn.to_q, hidden_states, layer.to_q, ids, id_list, s)
            key = self._project(attn.to_k, kv, layer.to_k, ids, id_list, s)
            value = self._project(attn.to_v, kv, layer.to_v, ids, id_list, s)
        else:
            query = attn.to_q(hidden_states) + layer.to_q(hidden_states, ids, s)
            key = attn.to_k(kv) + layer.to_k(kv, ids, s)
            value = attn.to_v(kv) + layer.to_v(kv, ids, s)

        heads = attn.heads
        head_dim = query.shape[-1] // heads
        query, key, value = (t.view(rows, -1, heads, head_dim).transpose(1, 2) for t in (query, key, value))
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, kv.shape[1], rows)
            attention_mask = attention_mask.view(rows, heads, -1, attention_mask.shape[-1])
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
        )
        out = out.transpose(1, 2).reshape(rows, -1, heads * head_dim).to(query.dtype)

        if fast:
            out = self._project(attn.to_out[0], out, layer.to_out, ids, id_list, s)
        else:
            out = attn.to_out[0](out) + layer.to_out(out, ids, s)
        out = attn.to_out[1](out)
        if layer.saim is not None and run.saim and not write:
            if fast and self.fold_saim:
                out = self._folds.get(layer.saim, out)(out, inplace=True)  # out: this call's fresh to_out output
            else:
                out = layer.saim(out)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def _attention_modules(unet: nn.Module) -> dict[str, nn.Module]:
    return {name: module for name, module in unet.named_modules() if hasattr(module, "set_processor")}


def install(unet: nn.Module, adapter: DualAdapter, fold_saim: bool = True) -> dict[str, DualAttnProcessor]:
    """Put a ``DualAttnProcessor`` on all 32 attentions of an SD1.5-topology diffusers UNet."""
    modules = _attention_modules(unet)
    unknown = sorted(set(modules) - set(SD15_BY_DIFFUSERS))
    if unknown:
        raise ValueError(f"UNet does not have the SD1.5 block layout: unexpected attention {unknown[0]!r}")
    processors = {}
    for site, layer in adapter.items():
        if site.diffusers not in modules:
            raise ValueError(f"UNet does not have the SD1.5 block layout: attention {site.diffusers!r} is missing")
        attn = modules[site.diffusers]
        got = (attn.to_q.in_features, attn.to_k.in_features)
        if got != (layer.dim, layer.kv_dim):
            raise ValueError(
                f"{site.diffusers}: UNet attention has (hidden, kv) sizes {got}, "
                f"the dual model expects {(layer.dim, layer.kv_dim)}"
            )
        processors[f"{site.diffusers}.processor"] = DualAttnProcessor(site, layer, fold_saim)
    unet.set_attn_processor(dict(processors))  # diffusers pops entries from the dict it is given
    return processors


class DualUNet(nn.Module):
    """A frozen diffusers UNet plus its ``DualAdapter`` behind one ``forward`` (what accelerate prepares).

    With ``background`` given, a BCM write pass runs first on the (already noised) background latents
    with the global prompt of each pair, then the read pass on the pairs. Returns the UNet prediction.
    """

    def __init__(self, unet: nn.Module, adapter: DualAdapter) -> None:
        super().__init__()
        self.unet, self.adapter = unet, adapter
        install(unet, adapter)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor,
        *,
        unet_pass: UNetPass | None = None,
        background: torch.Tensor | None = None,
        background_timestep: torch.Tensor | None = None,
        background_context: torch.Tensor | None = None,
        **unet_kwargs,
    ) -> torch.Tensor:
        run = unet_pass or UNetPass()
        check_rows(sample.shape[0], run.chunks, what="DualUNet sample")
        if encoder_hidden_states.shape[0] != sample.shape[0]:
            raise ValueError(
                f"encoder_hidden_states has {encoder_hidden_states.shape[0]} rows, sample has {sample.shape[0]}"
            )

        def call(x, t, ctx, mode: str = run.mode, bank: dict | None = None) -> torch.Tensor:
            dual = run if bank is None else replace(run, mode=mode, bank=bank)
            kwargs = unet_kwargs if mode != "write" else {}
            return self.unet(x, t, ctx, cross_attention_kwargs={"dual": dual}, return_dict=False, **kwargs)[0]

        if background is None:
            return call(sample, timestep, encoder_hidden_states)
        if not self.adapter.config.bcm:
            raise ValueError("background given, but this dual model was built without BCM (DualConfig.bcm=False)")
        t = torch.as_tensor(timestep, device=sample.device)
        return write_then_read(
            call, sample, t, encoder_hidden_states, background, background_timestep, background_context
        )
