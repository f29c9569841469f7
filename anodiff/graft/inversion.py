"""Deterministic DDIM inversion (O2MAG, as MasaCtrl: x at the next timestep from the noise predicted there),
keeping every intermediate latent: the trajectory the normal and reference branches replay."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from .ddim import DDIM

Predict = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(latents, timestep, context) -> predicted noise (fp32): the UNet behind whichever framework runs it."""


def ddim_schedulers(alphas: torch.Tensor, steps: int) -> tuple[DDIM, DDIM]:
    """(sampling, inversion) DDIM steps on the model's ``alphas_cumprod``."""
    return DDIM(alphas, steps), DDIM(alphas, steps, inverse=True)


@torch.no_grad()
def ddim_invert(
    predict: Predict,
    inverse: DDIM,
    latent: torch.Tensor,
    context: torch.Tensor,
    progress: bool = True,
    desc: str = "inversion",
    bar: Callable[[], None] | None = None,
) -> list[torch.Tensor]:
    """[x_0, x_{t_1}, ..., x_{t_T}] for ``latent`` (B, 4, h, w) under ``context`` (B, 77, C), no guidance.
    ``bar``: called after every step (ComfyUI's progress bar)."""
    trajectory = [latent]
    x = latent
    for t in tqdm(list(inverse.timesteps), desc=desc, leave=False, disable=not progress):
        x = inverse.step(predict(x, t, context), t, x).prev_sample
        trajectory.append(x)
        if bar is not None:
            bar()
    return trajectory
