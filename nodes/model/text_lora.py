"""The shared text-encoder LoRA of a dual file as ordinary CLIP weight patches (comfy.lora's key map)."""

from __future__ import annotations

import torch


def apply_text_lora(clip, tensors: dict[str, torch.Tensor], rank: int, alpha: float, strength: float):
    """Clone ``clip`` and add the shared text-encoder LoRA as ordinary weight patches (comfy.lora key map)."""
    import comfy.lora

    lora = dict(tensors)
    if alpha != rank:
        for key in [k for k in tensors if k.endswith(".lora_A.weight")]:
            lora[key[: -len(".lora_A.weight")] + ".alpha"] = torch.tensor(float(alpha))
    key_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, {})
    loaded = comfy.lora.load_lora(lora, key_map, log_missing=False)
    expected = sum(k.endswith(".lora_A.weight") for k in tensors)
    if len(loaded) != expected:
        raise ValueError(
            f"the text-encoder LoRA matched {len(loaded)} of {expected} CLIP projections; is this CLIP from SD1.5?"
        )
    c = clip.clone()
    c.add_patches(loaded, strength)
    return c
