"""DDIM sampling and inversion steps on a model's ``alphas_cumprod``, with diffusers' interface (``timesteps``,
``scale_model_input``, ``step(...).prev_sample``, ``add_noise``), so ``sd15.sampling.denoise`` runs them.

Written here rather than taken from diffusers because ComfyUI ships without diffusers and the nodes must run the
same steps; ``tests/test_graft.py`` checks them against diffusers' ``DDIMScheduler`` / ``DDIMInverseScheduler``
(SD1.5's "leading" spacing with ``steps_offset=1``, ``set_alpha_to_one=False``, as O2MAG configures them).
"""

from __future__ import annotations

from types import SimpleNamespace

import torch


class DDIM:
    """``inverse=False``: timesteps high to low, x_t -> x_{t-k}; ``inverse=True``: low to high, x_{t-k} -> x_t with
    the noise predicted at t (MasaCtrl/O2MAG's ``next_step``)."""

    def __init__(self, alphas_cumprod: torch.Tensor, steps: int, inverse: bool = False, offset: int = 1) -> None:
        self.alphas = alphas_cumprod.double().cpu()
        self.total = len(self.alphas)
        self.ratio = self.total // steps
        ts = torch.arange(steps, dtype=torch.long) * self.ratio + offset
        self.timesteps = ts if inverse else ts.flip(0)
        self.inverse = inverse
        self.config = SimpleNamespace(num_train_timesteps=self.total)

    def _alpha(self, t: int) -> float:
        return float(self.alphas[t]) if t >= 0 else float(self.alphas[0])

    def scale_model_input(self, sample: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        return sample

    def step(self, eps: torch.Tensor, timestep: torch.Tensor, sample: torch.Tensor) -> SimpleNamespace:
        t = int(timestep)
        if self.inverse:
            a_from, a_to = self._alpha(t - self.ratio), self._alpha(min(t, self.total - 1))
        else:
            a_from, a_to = self._alpha(t), self._alpha(t - self.ratio)
        x0 = (sample - (1 - a_from) ** 0.5 * eps) / a_from**0.5
        return SimpleNamespace(prev_sample=a_to**0.5 * x0 + (1 - a_to) ** 0.5 * eps)

    def add_noise(self, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        a = self.alphas.to(sample.device, torch.float32)[timesteps.to(sample.device)].view(-1, 1, 1, 1)
        return a.sqrt() * sample + (1 - a).sqrt() * noise


def sd15_alphas(config: dict | None = None) -> torch.Tensor:
    """SD1.5's ``alphas_cumprod`` (scaled-linear betas 0.00085..0.012 over 1000 steps), or from a scheduler config."""
    c = dict(config or {})
    start, end, total = c.get("beta_start", 0.00085), c.get("beta_end", 0.012), c.get("num_train_timesteps", 1000)
    betas = torch.linspace(start**0.5, end**0.5, total, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0)
