"""Tiny SD1.5-layout models built from configs (no weights exist offline; see comfyui-internals.md §6-7)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_CHANNELS = (32, 64, 64, 64)
TINY_CONTEXT = 32


def tiny_unet(seed: int = 0, channels: tuple[int, ...] = TINY_CHANNELS, context: int = TINY_CONTEXT):
    """A diffusers UNet with SD1.5's block layout (16 transformer blocks, 32 attentions), narrow channels."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=channels,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=context,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    return unet.eval().requires_grad_(False)


def tiny_text_encoder(seed: int = 0, hidden: int = TINY_CONTEXT):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        hidden_size=hidden,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=49408,
        max_position_embeddings=77,
    )
    return CLIPTextModel(config).eval().requires_grad_(False)


def randomize_(module: torch.nn.Module, seed: int = 1, std: float = 0.05) -> torch.nn.Module:
    """Give every parameter (LoRA up-factors included) a non-trivial deterministic value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return module


COMFY_TOKENIZER = Path(__file__).resolve().parents[1] / ".cache" / "comfyui" / "comfy" / "sd1_tokenizer"


def tiny_vae(seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(32, 32),
        layers_per_block=1,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=32,
        sample_size=32,
    )


def save_tiny_sd15(
    folder: Path, channels: tuple[int, ...] = TINY_CHANNELS, context: int = TINY_CONTEXT, sd15_vae: bool = False
) -> Path:
    """A diffusers-format folder with SD1.5's layout but tiny widths, loadable by ``anodiff.sd15.load.load_sd15``.

    The real SD1 tokenizer files come from the ComfyUI copy that ``scripts/fetch_assets.py`` unpacks.
    ``sd15_vae``: SD1.5's VAE (random weights, 8x downsampling) instead of the tiny 2x one, for benchmarks.
    """
    from diffusers import DDPMScheduler
    from transformers import CLIPTokenizer

    folder = Path(folder)
    tiny_unet(channels=channels, context=context).save_pretrained(folder / "unet")
    if sd15_vae:
        from diffusers import AutoencoderKL

        from anodiff.sd15.config import VAE

        torch.manual_seed(0)
        AutoencoderKL.from_config({k: v for k, v in VAE.items() if not k.startswith("_")}).save_pretrained(
            folder / "vae"
        )
    else:
        tiny_vae().save_pretrained(folder / "vae")
    tiny_text_encoder(hidden=context).save_pretrained(folder / "text_encoder")
    CLIPTokenizer(
        str(COMFY_TOKENIZER / "vocab.json"), str(COMFY_TOKENIZER / "merges.txt"), model_max_length=77
    ).save_pretrained(folder / "tokenizer")
    DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        clip_sample=False,
    ).save_pretrained(folder / "scheduler")
    from anodiff.sd15.config import MODEL_INDEX

    (folder / "model_index.json").write_text(json.dumps(MODEL_INDEX))  # also usable as a single-file config folder
    return folder
