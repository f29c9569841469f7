"""The frozen Stable Diffusion 1.5 components, loaded from a path the user gives (never downloaded)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .sites import SD15_BY_DIFFUSERS

COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


class BaseModelError(ValueError):
    """The base model path is missing or is not an SD1.5 model; the message names the path and what was expected."""


@dataclass
class SD15:
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object
    source: str

    @property
    def widths(self) -> tuple[tuple[int, ...], int]:
        return tuple(self.unet.config.block_out_channels), int(self.unet.config.cross_attention_dim)

    @property
    def latent_scale(self) -> float:
        return float(getattr(self.vae.config, "scaling_factor", 0.18215))

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """(len(prompts), 77, C) CLIP hidden states, padded to the tokenizer's max length as SD1.5 does."""
        length = min(self.tokenizer.model_max_length, self.text_encoder.config.max_position_embeddings)
        ids = self.tokenizer(prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
        ids = ids.input_ids.to(self.text_encoder.device)
        return self.text_encoder(ids)[0]


def check_sd15(unet: torch.nn.Module, text_encoder: torch.nn.Module, source: str) -> None:
    """SD1.5's block layout (32 attentions at the known paths) and a text encoder as wide as the cross-attention."""
    names = {name for name, m in unet.named_modules() if hasattr(m, "set_processor")}
    missing = sorted(set(SD15_BY_DIFFUSERS) - names)
    extra = sorted(names - set(SD15_BY_DIFFUSERS))
    if missing or extra:
        bad = (extra or missing)[0]
        raise BaseModelError(
            f"{source}: not a Stable Diffusion 1.5 UNet (attention {bad!r} "
            f"{'is unexpected' if extra else 'is missing'}); DualAnoDiff needs SD1.5's block layout"
        )
    hidden = text_encoder.config.hidden_size
    if hidden != unet.config.cross_attention_dim:
        raise BaseModelError(
            f"{source}: text encoder width {hidden} differs from the UNet's cross-attention width "
            f"{unet.config.cross_attention_dim}; expected SD1.5's CLIP ViT-L (768)"
        )


def load_sd15(path: str | Path, dtype: torch.dtype = torch.float32) -> SD15:
    """Load unet/vae/text_encoder/tokenizer/scheduler from a diffusers folder (``save_pretrained`` layout)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    root = Path(path)
    source = str(root)
    if not root.exists():
        raise BaseModelError(f"{source}: base model not found; give the folder of an SD1.5 model in diffusers format")
    if root.is_file():
        raise BaseModelError(
            f"{source}: single-file checkpoints are not supported yet; convert it to a diffusers folder "
            "(diffusers' convert_original_stable_diffusion_to_diffusers.py) or point to one"
        )
    absent = [c for c in COMPONENTS if not (root / c).is_dir()]
    if absent:
        raise BaseModelError(f"{source}: not a diffusers SD1.5 folder: subfolder {absent[0]!r} is missing")
    kw = {"local_files_only": True}
    try:
        unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", torch_dtype=dtype, **kw)
        vae = AutoencoderKL.from_pretrained(root, subfolder="vae", torch_dtype=dtype, **kw)
        text_encoder = CLIPTextModel.from_pretrained(root, subfolder="text_encoder", torch_dtype=dtype, **kw)
        tokenizer = CLIPTokenizer.from_pretrained(root, subfolder="tokenizer", **kw)
        scheduler = DDPMScheduler.from_pretrained(root, subfolder="scheduler", **kw)
    except (OSError, ValueError) as exc:
        raise BaseModelError(f"{source}: cannot load the SD1.5 components ({exc})") from exc
    check_sd15(unet, text_encoder, source)
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False).eval()
    return SD15(unet, vae, text_encoder, tokenizer, scheduler, source)
