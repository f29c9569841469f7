"""Deterministic DDIM inversion (O2MAG, as MasaCtrl: x at the next timestep from the noise predicted there),
keeping every intermediate latent: the trajectory the normal and reference branches replay."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm


def ddim_schedulers(config: dict, steps: int, device: torch.device) -> tuple[object, object]:
    """(sampling DDIMScheduler, DDIMInverseScheduler) with O2MAG's settings on the base model's betas."""
    from diffusers import DDIMInverseScheduler, DDIMScheduler

    forward = DDIMScheduler.from_config(config, clip_sample=False, set_alpha_to_one=False)
    inverse = DDIMInverseScheduler.from_config(config, clip_sample=False, set_alpha_to_one=False)
    forward.set_timesteps(steps, device=device)
    inverse.set_timesteps(steps, device=device)
    return forward, inverse


@torch.no_grad()
def ddim_invert(
    unet: torch.nn.Module,
    inverse: object,
    latent: torch.Tensor,
    context: torch.Tensor,
    progress: bool = True,
    desc: str = "inversion",
) -> list[torch.Tensor]:
    """[x_0, x_{t_1}, ..., x_{t_T}] for ``latent`` (B, 4, h, w) under ``context`` (B, 77, C), no guidance."""
    trajectory = [latent]
    x = latent
    for t in tqdm(list(inverse.timesteps), desc=desc, leave=False, disable=not progress):
        eps = unet(x.to(unet.dtype), t, context.to(unet.dtype), return_dict=False)[0].float()
        x = inverse.step(eps, t, x).prev_sample
        trajectory.append(x)
    return trajectory
