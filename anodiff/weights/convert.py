"""Converter from the authors' ``pytorch_lora_weights.bin`` (diffusers 0.18 ``save_lora_weights``) to our schema.

Official keys::

    unet.<site>.processor[.chained_proc].to_<q|k|v|out>_lora.<0|1>.<down|up>.weight   (0 = blend/global, 1 = fg/anomaly)
    unet.<site>.processor[.chained_proc].temporal_<n|i|q|k|v|o>.<weight|bias>          (SAIM)
    unet.<site>.processor[.chained_proc].temporal_condition_mlp.<0|1>.<weight|bias>    (BCM MLP)
    unet.<site>.processor[.chained_proc].temporal_a                                    (BCM mixing scalar)
    text_encoder.text_model.encoder.layers.<i>.self_attn.to_<q|k|v|out>_lora.<down|up>.weight

``chained_proc`` appears on attn1 of the BCM variant (``ReferenceOnlyAttnProc`` wraps the processor). The
official BCM MLP also exists on attn2 sites, where its forward never uses it; those tensors are dropped.
"""

from __future__ import annotations

import logging
import re

import torch

from ..model.config import DualConfig
from ..model.pairs import BRANCH_NAMES
from ..model.sites import SD15_BY_DIFFUSERS, SD15_CHANNELS, SD15_CONTEXT_DIM, SD15_SITES
from .schema import (
    TEXT_PREFIX,
    DualFile,
    DualWeightsError,
    build_metadata,
    validate,
)

log = logging.getLogger(__name__)

_UNET = re.compile(r"^unet\.(?P<site>.+?)\.processor\.(?:chained_proc\.)?(?P<rest>.+)$")
_LORA = re.compile(r"^to_(?P<proj>q|k|v|out)_lora\.(?P<branch>[01])\.(?P<part>down|up)\.weight$")
_SAIM = re.compile(r"^temporal_(?P<part>[niqkvo])\.(?P<wb>weight|bias)$")
_MLP = re.compile(r"^temporal_condition_mlp\.(?P<i>[01])\.(?P<wb>weight|bias)$")
_TEXT = re.compile(
    r"^text_encoder\.(?:text_model\.)?encoder\.layers\.(?P<i>\d+)\.self_attn\."
    r"to_(?P<proj>q|k|v|out)_lora\.(?P<part>down|up)\.weight$"
)
_SAIM_NAMES = {"n": "norm", "i": "proj_in", "q": "to_q", "k": "to_k", "v": "to_v", "o": "proj_out"}


def looks_official(tensors: dict[str, torch.Tensor]) -> bool:
    return any(_UNET.match(k) and ("_lora.0." in k or "_lora.1." in k or ".temporal_" in k) for k in tensors)


def describe_foreign(tensors: dict[str, torch.Tensor], source: str) -> str:
    """Explain what a non-DualAnoDiff file probably is, naming its first key."""
    keys = sorted(tensors)
    if not keys:
        return f"{source}: the file holds no tensors"
    first = keys[0]
    joined = " ".join(keys[:200])
    if "lora_unet_" in joined or ".lora_down." in joined or ".lora_A." in joined or "_lora.down." in joined:
        kind = "an ordinary single-branch LoRA (one LoRA for the whole batch)"
    elif "model.diffusion_model." in joined or "conditioner." in joined:
        kind = "a full checkpoint"
    else:
        kind = "not a DualAnoDiff model"
    return (
        f"{source}: this looks like {kind}, not a DualAnoDiff dual-branch model (first key {first!r}). Expected keys "
        "like 'unet.<site>.to_q.global.down' (ours) or 'unet.<site>.processor.to_q_lora.0.down.weight' (authors' .bin)"
    )


def _site(key: str, name: str) -> str:
    if name not in SD15_BY_DIFFUSERS:
        raise DualWeightsError(
            f"key {key!r}: attention {name!r} is not one of the 32 SD1.5 attentions (an SDXL or other model's LoRA?)"
        )
    return name


def _infer_widths(out: dict[str, torch.Tensor]) -> tuple[tuple[int, ...], int, int]:
    """(channels per level, context width, text width) read off the LoRA shapes; SD1.5's where absent."""
    channels = list(SD15_CHANNELS)
    context = SD15_CONTEXT_DIM
    for site in SD15_SITES:
        down = out.get(f"unet.{site.diffusers}.to_q.global.down")
        if down is not None:
            channels[site.level] = down.shape[1]
        kv = out.get(f"unet.{site.diffusers}.to_k.global.down")
        if kv is not None and not site.is_self:
            context = kv.shape[1]
    text = next((v.shape[1] for k, v in out.items() if k.startswith(TEXT_PREFIX) and k.endswith("lora_A.weight")), 768)
    return tuple(channels), context, text


def convert_official(state: dict[str, torch.Tensor], source: str = "<state dict>", sd15_only: bool = True) -> DualFile:
    """Map an official state dict onto our schema and validate it.

    sd15_only: check against SD1.5's widths (320/640/1280, text 768); otherwise accept any UNet with SD1.5's
    block layout and read the widths off the tensors (the tiny test models).
    """
    out: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    ranks: set[int] = set()
    text_ranks: set[int] = set()
    text_layers: set[int] = set()
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise DualWeightsError(f"{source}: key {key!r} is a {type(value).__name__}, expected a tensor")
        if key.startswith("text_encoder."):
            m = _TEXT.match(key)
            if not m:
                raise DualWeightsError(f"{source}: unrecognised text-encoder key {key!r}")
            ab = "lora_A" if m["part"] == "down" else "lora_B"
            out[f"{TEXT_PREFIX}text_model.encoder.layers.{m['i']}.self_attn.{m['proj']}_proj.{ab}.weight"] = value
            text_layers.add(int(m["i"]))
            if m["part"] == "down":
                text_ranks.add(value.shape[0])
            continue
        m = _UNET.match(key)
        if not m:
            raise DualWeightsError(f"{source}: unrecognised key {key!r} (not a DualAnoDiff file?)")
        try:
            site = _site(key, m["site"])
        except DualWeightsError as exc:
            raise DualWeightsError(f"{source}: {exc}") from None
        rest, prefix = m["rest"], f"unet.{site}."
        if lm := _LORA.match(rest):
            proj = "to_out" if lm["proj"] == "out" else f"to_{lm['proj']}"
            out[f"{prefix}{proj}.{BRANCH_NAMES[int(lm['branch'])]}.{lm['part']}"] = value
            if lm["part"] == "down":
                ranks.add(value.shape[0])
        elif sm := _SAIM.match(rest):
            out[f"{prefix}saim.{_SAIM_NAMES[sm['part']]}.{sm['wb']}"] = value
        elif mm := _MLP.match(rest):
            if SD15_BY_DIFFUSERS[site].is_self:
                out[f"{prefix}bcm.mlp.{mm['i']}.{mm['wb']}"] = value
            else:
                dropped.append(key)
        elif rest == "temporal_a":
            if SD15_BY_DIFFUSERS[site].is_self:
                out[f"{prefix}bcm.a"] = value.reshape(1)
            else:
                dropped.append(key)
        else:
            raise DualWeightsError(f"{source}: unrecognised key {key!r}")
    if len(ranks) != 1:
        raise DualWeightsError(f"{source}: expected one UNet LoRA rank, found {sorted(ranks) or 'none'}")
    if len(text_ranks) > 1:
        raise DualWeightsError(f"{source}: expected one text-encoder LoRA rank, found {sorted(text_ranks)}")
    if dropped:
        log.info("%s: dropped %d unused attn2 BCM tensors", source, len(dropped))
    rank = ranks.pop()
    text_rank = text_ranks.pop() if text_ranks else rank
    config = DualConfig(
        rank=rank,
        alpha=float(rank),
        saim=any(".saim." in k for k in out),
        bcm=any(".bcm." in k for k in out),
        text_rank=text_rank,
        text_alpha=float(text_rank),
    )
    channels, context, text_hidden = (SD15_CHANNELS, SD15_CONTEXT_DIM, 768) if sd15_only else _infer_widths(out)
    meta = build_metadata(
        config,
        channels,
        context,
        text_hidden=text_hidden if text_layers else 0,
        text_layers=max(text_layers) + 1 if text_layers else 0,
        source="authors' pytorch_lora_weights.bin",
    )
    dual = DualFile(config, channels, context, {k: v.float() for k, v in out.items()}, meta, source)
    validate(dual)
    return dual
