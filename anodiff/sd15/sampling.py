"""THE denoising loop: one plain function that every sampler of this project runs (the SD1.5 pipeline, its
training previews, and the offline demo's pixel-space model), so a fix to the loop reaches all of them.

The loop knows nothing of branches, guidance or BCM: those live in the ``denoiser`` closure, which maps the
current latents of all 2N interleaved rows ``[g0, a0, g1, a1, ...]`` and a timestep to the model output the
scheduler expects (a noise prediction for SD1.5; an x0 prediction for the demo). The scheduler is anything with
diffusers' sampling interface: ``timesteps``, ``scale_model_input(x, t)`` and ``step(out, t, x).prev_sample``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepEnd = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


class SamplingScheduler(Protocol):
    """The part of a diffusers scheduler the loop uses (``set_timesteps`` has already been called)."""

    timesteps: Any

    def scale_model_input(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor: ...

    def step(self, model_output: torch.Tensor, timestep: torch.Tensor, sample: torch.Tensor) -> Any: ...


def denoise(
    denoiser: Denoiser,
    scheduler: SamplingScheduler,
    latents: torch.Tensor,
    on_step_end: StepEnd | None = None,
    progress: Any | None = None,
) -> torch.Tensor:
    """Run every timestep of ``scheduler`` on ``latents`` (2N, C, h, w) and return the final latents.

    Each step: ``x = scale_model_input(latents, t)``, ``out = denoiser(x, t)``, ``latents = step(out, t,
    latents).prev_sample``, then ``latents = on_step_end(i, t, latents)`` when given (region holds, diffusers'
    ``callback_on_step_end``). ``progress``: an object with ``update()`` (a tqdm bar), advanced once per step.
    """
    for i, t in enumerate(list(scheduler.timesteps)):
        x = scheduler.scale_model_input(latents, t)
        out = denoiser(x, t)
        latents = scheduler.step(out, t, latents).prev_sample
        if on_step_end is not None:
            latents = on_step_end(i, t, latents)
        if progress is not None:
            progress.update()
    return latents
