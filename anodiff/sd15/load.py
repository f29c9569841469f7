"""The frozen Stable Diffusion 1.5 components, loaded from a path the user gives (never downloaded)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..model.sites import SD15_BY_DIFFUSERS

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


CONFIG_ENV = "ANODIFF_SD15_CONFIG"  # a diffusers SD1.5 folder whose configs a single-file checkpoint is read with


def _load_single_file(path: Path, dtype: torch.dtype, config: str | Path | None) -> SD15:
    """A ``.safetensors``/``.ckpt`` SD1.5 checkpoint, read with SD1.5's bundled configs (no download)."""
    import tempfile

    from diffusers import DDPMScheduler, StableDiffusionPipeline

    from .config import find_tokenizer, write_config_folder

    source = str(path)
    if path.suffix.lower() not in (".safetensors", ".ckpt"):
        raise BaseModelError(f"{source}: expected a .safetensors or .ckpt checkpoint, or a diffusers folder")
    config = config or os.environ.get(CONFIG_ENV)
    with tempfile.TemporaryDirectory(prefix="anodiff-sd15-") as tmp:
        folder = Path(config) if config else write_config_folder(Path(tmp), find_tokenizer())
        try:
            pipe = StableDiffusionPipeline.from_single_file(
                source,
                config=str(folder),
                local_files_only=True,
                torch_dtype=dtype,
                safety_checker=None,
                requires_safety_checker=False,
            )
        except Exception as exc:  # diffusers raises many types for a checkpoint that does not fit
            raise BaseModelError(f"{source}: cannot read it as a Stable Diffusion 1.5 checkpoint ({exc})") from exc
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    return _finish(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, scheduler, source)


def _finish(unet, vae, text_encoder, tokenizer, scheduler, source: str) -> SD15:
    check_sd15(unet, text_encoder, source)
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False).eval()
    return SD15(unet, vae, text_encoder, tokenizer, scheduler, source)


def load_sd15(path: str | Path, dtype: torch.dtype = torch.float32, config: str | Path | None = None) -> SD15:
    """Load unet/vae/text_encoder/tokenizer/scheduler from a diffusers folder or a single checkpoint file.

    config: for a single file, a diffusers folder to take the component configs from (default: SD1.5's, with the
    tokenizer found by ``anodiff.sd15.config.find_tokenizer``; or ``$ANODIFF_SD15_CONFIG``).
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    root = Path(path)
    source = str(root)
    if not root.exists():
        raise BaseModelError(
            f"{source}: base model not found; give an SD1.5 diffusers folder or a .safetensors/.ckpt checkpoint"
        )
    if root.is_file():
        return _load_single_file(root, dtype, config)
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
    return _finish(unet, vae, text_encoder, tokenizer, scheduler, source)
