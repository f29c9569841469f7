"""Tiny SD1.5-layout models built from configs (no weights exist offline; see comfyui-internals.md §6-7)."""

from __future__ import annotations

import torch

TINY_CHANNELS = (32, 64, 64, 64)
TINY_CONTEXT = 32


def tiny_unet(seed: int = 0):
    """A diffusers UNet with SD1.5's block layout (16 transformer blocks, 32 attentions), narrow channels."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=TINY_CHANNELS,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TINY_CONTEXT,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    return unet.eval().requires_grad_(False)


def tiny_text_encoder(seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    config = CLIPTextConfig(
        hidden_size=TINY_CONTEXT,
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

