"""The latent cache of training, for every host: VAE posteriors per (key, image, flips), sampled with the step's
generator.

A host passes ``encode``: pixels (B, 3, R, R) in [-1, 1] -> posterior parameters (B, 8, h, w) (mean and
log-variance, diffusers' ``latent_dist.parameters``) or the mean alone (B, 4, h, w) where the host's encoder gives
no variance (ComfyUI's VAE, TAESD). The noise of the sample is drawn from the step's generator either way, so
every host consumes the same draws and the timesteps and noise after it are the same.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .step import cache_slots, interleave_rows

LATENT_CHANNELS = 4
"""SD1.5's latent channels: ``encode`` gives twice as many (mean, log-variance) or exactly as many (mean only)."""


def sample_posterior(params: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """``mean + std * noise`` as diffusers' ``DiagonalGaussianDistribution.sample`` (log-variance clamped to
    [-30, 20], noise drawn on the CPU from ``g``); the mean itself when ``params`` holds no variance."""
    mean = params[:, :LATENT_CHANNELS]
    noise = torch.randn(mean.shape, generator=g, dtype=mean.dtype).to(mean.device)
    if params.shape[1] == LATENT_CHANNELS:
        return mean
    std = torch.exp(0.5 * torch.clamp(params[:, LATENT_CHANNELS:], -30.0, 20.0))
    return mean + std * noise


class LatentCache:
    """``step.SampleLatents``: each (key, image, flips) encoded once when ``enabled`` (the few-shot set holds a few
    images, each seen in 4 flips), else the step's rows encoded every step. ``encodes`` counts encoder calls."""

    def __init__(self, encode: Callable[[torch.Tensor], torch.Tensor], enabled: bool = True) -> None:
        self.encode, self.enabled = encode, enabled
        self.slots: dict[tuple, torch.Tensor] = {}
        self.encodes = 0

    def posterior(self, step_batch: dict[str, torch.Tensor], key: str) -> torch.Tensor:
        """(B, 8 or 4, h, w) posterior parameters of ``step_batch[key]``."""
        if not self.enabled:
            self.encodes += 1
            return self.encode(step_batch[key])
        rows = []
        for k, slot in enumerate(cache_slots(step_batch, key)):
            if slot not in self.slots:
                self.encodes += 1
                self.slots[slot] = self.encode(step_batch[key][k : k + 1])
            rows.append(self.slots[slot])
        return torch.cat(rows)

    def __call__(self, step_batch: dict[str, torch.Tensor], keys: tuple[str, ...], g: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            params = interleave_rows([self.posterior(step_batch, key) for key in keys])
        return sample_posterior(params, g)
