"""Training previews: one pair sampled with the live model, saved as global | anomaly part | mask."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from . import masks
from .processor import DualPass


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def render_preview(sd, model, resolution: int, seed: int, path: Path, steps: int = 20, cfg: float = 2.5) -> Path:
    """``model`` is the training ``DualTrainModel`` (its text encoder carries the live text LoRA)."""
    from diffusers import DDIMScheduler

    device = next(model.parameters()).device
    scheduler = DDIMScheduler.from_config(sd.scheduler.config)
    scheduler.set_timesteps(steps)
    factor = 2 ** (len(sd.vae.config.block_out_channels) - 1)
    side = resolution // factor
    g = torch.Generator().manual_seed(seed)
    latents = (torch.randn(2, 4, side, side, generator=g) * scheduler.init_noise_sigma).to(device)
    context = model.text_encoder(model.prompt_ids)[0]
    empty = sd.tokenizer(["", ""], padding="max_length", max_length=model.prompt_ids.shape[1], return_tensors="pt")
    uncond = model.text_encoder(empty.input_ids.to(device))[0]
    for t in scheduler.timesteps:
        inp = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        eps = model.dual_unet(inp, t, torch.cat([uncond, context]), run=DualPass(chunks=2))
        eps_u, eps_c = eps.chunk(2)
        latents = scheduler.step(eps_u + cfg * (eps_c - eps_u), t, latents).prev_sample
    images = sd.vae.decode(latents.float() / sd.latent_scale).sample
    glob, anomaly = to_uint8(images)
    mask = masks.extract_mask(anomaly, method="grey", min_area=4)
    sheet = np.concatenate([glob, anomaly, np.repeat(mask[..., None].astype(np.uint8) * 255, 3, axis=2)], axis=1)
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.png")
    cv2.imwrite(str(tmp), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    tmp.replace(path)
    return path
