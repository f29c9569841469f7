"""Tiny random Dual LoRA files for the tiny ComfyUI model's widths (shared by the node and end-to-end tests)."""

from __future__ import annotations

from pathlib import Path

import torch
from tiny import TINY_UNET_CONFIG

from anodiff import DualAdapter, DualConfig, to_dual_file

CHANNELS = tuple(TINY_UNET_CONFIG["model_channels"] * m for m in TINY_UNET_CONFIG["channel_mult"])
CONTEXT = TINY_UNET_CONFIG["context_dim"]


def write_dual_weights(path: Path, bcm: bool = False, zero: bool = False, seed: int = 3, text=None) -> DualAdapter:
    """Every tensor N(0, 0.04); BCM's mixing weight (0 when fresh, i.e. off) set to 0.3; ``zero`` zeroes the LoRA."""
    adapter = DualAdapter(DualConfig(rank=4, bcm=bcm, text_rank=2), CHANNELS, CONTEXT)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.04)
        for layer in adapter.values():
            if layer.bcm is not None:
                layer.bcm.a.fill_(0.3)
    if zero:
        adapter.zero_lora_()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_dual_file(adapter, text).save(path)
    return adapter
