"""A tiny SD1.5 (random weights) and synthetic reference / normal images for the graft-mode tests."""

from __future__ import annotations

import numpy as np


def tiny_base():
    """``anodiff.sd15.load.SD15`` from the tiny SD1.5-layout components (tokenizer: ComfyUI's SD1 files)."""
    from diffusers import DDPMScheduler
    from tiny_diffusers import COMFY_TOKENIZER, randomize_, tiny_text_encoder, tiny_unet, tiny_vae
    from transformers import CLIPTokenizer

    from anodiff.sd15.load import SD15

    if not (COMFY_TOKENIZER / "vocab.json").is_file():
        import pytest

        pytest.skip(f"SD1 tokenizer files absent ({COMFY_TOKENIZER}); run scripts/fetch_assets.py")
    tokenizer = CLIPTokenizer(
        str(COMFY_TOKENIZER / "vocab.json"), str(COMFY_TOKENIZER / "merges.txt"), model_max_length=77
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        clip_sample=False,
    )
    unet = randomize_(tiny_unet(), seed=5, std=0.03)
    return SD15(unet, tiny_vae().eval().requires_grad_(False), tiny_text_encoder(), tokenizer, scheduler, "tiny")


def textured(seed: int, size: int = 32) -> np.ndarray:
    g = np.random.default_rng(seed)
    base = np.linspace(0.3, 0.7, size, dtype=np.float32)[None, :, None] * np.ones((size, 1, 3), np.float32)
    return np.clip(base + g.normal(0, 0.05, (size, size, 3)).astype(np.float32), 0, 1)


def rect(size: int, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    m = np.zeros((size, size), np.float32)
    m[top:bottom, left:right] = 1
    return m


def reference_pair(size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """A textured image with a dark square defect, and its mask."""
    image, mask = textured(1, size), rect(size, 8, 20, 10, 22)
    image[mask > 0] = 0.05
    return image, mask
