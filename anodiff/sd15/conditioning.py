"""What the pipeline feeds the dual UNet besides noise: BCM backgrounds (encoded, then noised to each step) and the
latents region control holds the sampling to outside a region. Functions over tensors and an ``encode`` callable
(``(B, 3, H, W)`` in [-1, 1] -> unscaled VAE latents), so they carry no pipeline state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..common.imageio import as_float_image, resize
from ..model.pairs import interleave

Encode = Callable[[torch.Tensor], torch.Tensor]


def background_latents(
    encode: Encode, backgrounds: Sequence[np.ndarray], num_pairs: int, height: int, width: int
) -> torch.Tensor:
    """(num_pairs, 4, h, w) unscaled latents of the backgrounds, resized to the output size; one image may serve all."""
    if len(backgrounds) not in (1, num_pairs):
        raise ValueError(f"backgrounds: give one image per pair ({num_pairs}) or one for all, got {len(backgrounds)}")
    tensors = []
    for k, image in enumerate(backgrounds):
        x = as_float_image(np.asarray(image), f"backgrounds[{k}]")
        x = resize(x, height, width)
        tensors.append(torch.from_numpy(np.ascontiguousarray(x)).permute(2, 0, 1) * 2.0 - 1.0)
    latents = torch.cat([encode(t[None]) for t in tensors])
    return latents.expand(num_pairs, *latents.shape[1:]) if len(backgrounds) == 1 else latents


def noised_backgrounds(
    train_scheduler,
    background: torch.Tensor,
    grey: torch.Tensor,
    t: torch.Tensor,
    generators: list[torch.Generator],
    guided: bool,
) -> dict[str, torch.Tensor]:
    """BCM write-pass inputs: backgrounds DDPM-noised to step ``t`` with fresh noise from each pair's generator.

    Rows follow the pairs of the UNet batch: the grey (uncond) backgrounds, then the real ones (§5.4).
    """
    t_train = torch.as_tensor(t).float().round().long().clamp(0, train_scheduler.config.num_train_timesteps - 1)
    fresh = torch.stack([torch.randn(2, *background.shape[1:], generator=gen) for gen in generators])
    fresh = fresh.to(background.device, background.dtype)
    rows = [grey, background] if guided else [background]
    noise = [fresh[:, 0], fresh[:, 1]] if guided else [fresh[:, 1]]
    clean = torch.cat(rows)
    steps = t_train.to(clean.device).expand(clean.shape[0])
    noised = train_scheduler.add_noise(clean, torch.cat(noise), steps)
    return {"background": noised, "background_timestep": steps}


def region_targets(
    encode: Encode,
    grey: torch.Tensor,
    scale: float,
    photos: list[np.ndarray],
    regions: np.ndarray,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows the latents are held to outside the regions, (2N, 1, h, w) per-row map: 1 where sampling is free).

    grey: the unscaled latent of the grey canvas. Both rows of pair i share region i (and photo i when one per pair
    is given), so a batch may hold a different region in every pair; photos are encoded one at a time, so a pair is
    batch-independent."""
    encoded = [encode(torch.from_numpy(np.ascontiguousarray(p)).permute(2, 0, 1)[None] * 2.0 - 1.0) for p in photos]
    photo_latent = torch.cat(encoded).float() * scale
    grey = grey.float() * scale
    num_pairs = regions.shape[0]
    rows = interleave(
        photo_latent.expand(num_pairs, -1, -1, -1) if len(photos) == 1 else photo_latent,
        grey.expand(num_pairs, -1, -1, -1),
    )
    m = torch.from_numpy(regions.astype(np.float32))[:, None]
    keep = torch.nn.functional.adaptive_max_pool2d(m, rows.shape[-2:])  # a latent cell touching the region is free
    return rows.to(device), keep.repeat_interleave(2, dim=0).to(device)


def step_end_hook(
    pipe: object,
    held: tuple[torch.Tensor, torch.Tensor] | None,
    sampler,
    noise: torch.Tensor,
    timesteps: list,
    callback: Callable | None,
    tensor_inputs: Sequence[str],
) -> Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]:
    """What runs after denoising step ``i``: the region hold (the rows outside the regions set to ``held``'s
    targets noised to the next step), then the caller's diffusers-style ``callback(pipe, i, t, kwargs)``, whose
    returned ``"latents"`` replace the latents."""

    def step_end(i: int, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        if held is not None:
            target, keep = held
            if i + 1 < len(timesteps):
                target = sampler.add_noise(target, noise, timesteps[i + 1].reshape(1))
            latents = keep * latents + (1 - keep) * target
        if callback is not None:
            tensors = {"latents": latents}
            out = callback(pipe, i, t, {k: tensors[k] for k in tensor_inputs})
            latents = out.pop("latents", latents)
        return latents

    return step_end
