"""Text-encoder LoRA through peft: one adapter on CLIP's self-attention, shared by both prompts.

Official: diffusers 0.18's monkey-patched rank-32 LoRA on q/k/v/out of all 12 CLIP ``self_attn`` modules,
``network_alpha=None`` (scale 1), down ~ N(0, 1/rank), up = 0: peft's ``init_lora_weights="gaussian"``.
"""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from torch import nn

TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
ADAPTER = "default"


def text_lora_config(rank: int, alpha: float) -> LoraConfig:
    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(TEXT_TARGETS), init_lora_weights="gaussian")


def add_text_lora(text_encoder: nn.Module, rank: int, alpha: float) -> nn.Module:
    """Inject the shared LoRA into a transformers CLIP text model in place; returns it."""
    return inject_adapter_in_model(text_lora_config(rank, alpha), text_encoder, adapter_name=ADAPTER)


CANONICAL_PREFIX = "text_model."


def _model_prefix(text_encoder: nn.Module) -> str:
    # transformers < 5 nests the CLIP text transformer under ``text_model``; 5.x puts it at the top level.
    return CANONICAL_PREFIX if hasattr(text_encoder, "text_model") else ""


def text_lora_state(text_encoder: nn.Module) -> dict[str, torch.Tensor]:
    """LoRA tensors keyed like ``text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight`` (any transformers)."""
    prefix = _model_prefix(text_encoder)
    state = get_peft_model_state_dict(text_encoder, adapter_name=ADAPTER)
    return {CANONICAL_PREFIX + k[len(prefix) :]: v.detach() for k, v in state.items()}


def load_text_lora(text_encoder: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load tensors from ``text_lora_state`` into a text encoder that has ``add_text_lora`` applied."""
    prefix = _model_prefix(text_encoder)
    local = {prefix + k[len(CANONICAL_PREFIX) :]: v for k, v in tensors.items()}
    result = set_peft_model_state_dict(text_encoder, local, adapter_name=ADAPTER)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise ValueError(f"text-encoder LoRA: unexpected key {unexpected[0]!r}")
