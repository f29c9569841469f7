"""Checks that a MODEL has SD1.5's layout, and attaches a dual file to clones of a MODEL and its CLIP (the dual
patch of ``patch.py`` on the UNet, the shared text-encoder LoRA of ``text_lora.py`` on the CLIP)."""

from __future__ import annotations

from ...anodiff.model.sites import SD15_SITES
from .files import FoldedFile
from .patch import DualPatch, apply_dual, compute_dtype
from .text_lora import apply_text_lora


def unet_widths(model) -> tuple[tuple[int, ...], int]:
    """(channels per level, cross-attention width) of a ComfyUI SD-family MODEL."""
    config = model.model.model_config.unet_config
    channels = tuple(int(config["model_channels"]) * int(m) for m in config["channel_mult"])
    return channels, int(config.get("context_dim") or 0)


def check_sd15_layout(model) -> None:
    """Refuse models without the 32 SD1.5 attention sites, naming the first one missing."""
    for site in SD15_SITES:
        try:
            model.get_model_object(f"diffusion_model.{site.ldm}.to_q")
        except AttributeError:
            raise ValueError(
                f"this MODEL is not SD1.5: it has no attention 'diffusion_model.{site.ldm}' "
                "(DualAnoDiff models are trained on Stable Diffusion 1.5)"
            ) from None


def attach_dual(
    model,
    clip,
    dual,
    strengths: tuple[float, float] = (1.0, 1.0),
    strength_clip: float = 1.0,
    saim: bool = True,
    name: str = "",
):
    """A ``DualFile`` (folded here) or a ``FoldedFile`` (folded once, shared) on clones of ``model`` and ``clip``:
    the dual patch in the MODEL's compute dtype, and the shared text-encoder LoRA on the CLIP (when the file has
    one and ``strength_clip`` is not 0)."""
    if isinstance(dual, FoldedFile):
        patch = DualPatch(dual.adapter, strengths, saim=saim, name=name, source=dual)
        dual = dual.dual
    else:
        patch = DualPatch(
            dual.adapter(), strengths, saim=saim, name=name, dtype=compute_dtype(model), device=model.offload_device
        )
    new_clip = clip
    if clip is not None and dual.has_text_lora and strength_clip != 0:
        config = dual.config
        new_clip = apply_text_lora(
            clip,
            {"text_encoder." + k: v for k, v in dual.text_tensors().items()},
            config.text_rank,
            config.text_lora_alpha,
            strength_clip,
        )
    return apply_dual(model, patch), new_clip
