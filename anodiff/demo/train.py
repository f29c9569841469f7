"""Training from scratch and DDIM sampling for the demo's ``PairUNet``, on a step or wall-clock budget.

x0-prediction with a cosine schedule (Nichol & Dhariwal 2021) over 200 steps: with epsilon-prediction this tiny
model left about half of the global samples as noise after minutes of CPU training, while x0-prediction
converges. Both rows of a pair share the timestep (as in DualAnoDiff, where the two branches are denoised
together) but get independent noise, so only the network, through SAIM, can make their defects agree.
Sampling runs the project's one denoising loop (``anodiff.sd15.sampling.denoise``), the SD1.5 pipeline's, with
``CosineDDIM`` as its scheduler.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..common.precision import autocast, grad_scaler, training_step
from ..model.pairs import interleave, split
from ..sd15.sampling import denoise
from .data import FewShotSet
from .model import PairUNet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """How one demo model trains. ``steps`` wins over ``seconds`` when both are set; one of them must be."""

    steps: int | None = None
    seconds: float | None = None
    batch_pairs: int = 8
    lr: float = 2e-3
    warmup: int = 50
    weight_decay: float = 1e-4
    ema: float = 0.995
    timesteps: int = 200
    flips: bool = True
    seed: int = 0
    mixed_precision: str = "no"


@dataclass
class TrainResult:
    """The EMA model (for sampling), how far training got, and the loss curve (one value per step)."""

    model: PairUNet
    steps: int
    seconds: float
    losses: list[float] = field(default_factory=list)


def cosine_alphas_cumprod(timesteps: int, s: float = 0.008) -> torch.Tensor:
    """(T,) cumulative signal level ``alpha_bar_t`` for t = 0..T-1 of the cosine schedule, betas clipped at 0.999."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
    return torch.cumprod(1 - betas, dim=0).float()


def to_model_space(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) in [0, 1] -> (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() * 2 - 1


def to_image_space(x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) float32 in [0, 1]."""
    return ((x.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy().astype(np.float32)


def training_pairs(data: FewShotSet) -> torch.Tensor:
    """(2N, 3, H, W): every training pair as interleaved rows [image_0, part_0, image_1, part_1, ...]."""
    return interleave(to_model_space(data.images), to_model_space(data.parts))


def _batch(pairs: torch.Tensor, size: int, flips: bool, gen: torch.Generator) -> torch.Tensor:
    """``size`` random pairs (with replacement), each flipped as a unit so both rows keep the same geometry."""
    n = pairs.shape[0] // 2
    idx = torch.randint(0, n, (size,), generator=gen)
    glob, part = split(pairs)
    rows = torch.stack([glob[idx], part[idx]], dim=1)  # (size, 2, 3, H, W)
    if flips:
        hflip = torch.rand(size, generator=gen) < 0.5
        vflip = torch.rand(size, generator=gen) < 0.5
        rows = torch.where(hflip[:, None, None, None, None], rows.flip(-1), rows)
        rows = torch.where(vflip[:, None, None, None, None], rows.flip(-2), rows)
    return interleave(rows[:, 0], rows[:, 1])


def _ema_update(ema: PairUNet, model: PairUNet, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1 - decay)


def train_model(data: FewShotSet, saim: bool, settings: TrainSettings, desc: str | None = None) -> TrainResult:
    """Train a fresh ``PairUNet`` on ``data`` until ``settings.steps`` or ``settings.seconds`` run out.

    Loss: MSE between the predicted and the true x0 on both rows; both rows of a pair share t, not the noise.
    """
    if settings.steps is None and settings.seconds is None:
        raise ValueError("give a training budget: steps or seconds")
    torch.manual_seed(settings.seed)
    gen = torch.Generator().manual_seed(settings.seed)
    model = PairUNet(saim=saim)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    scaler = grad_scaler("cpu", settings.mixed_precision)
    alpha_bar = cosine_alphas_cumprod(settings.timesteps)
    pairs = training_pairs(data)
    losses: list[float] = []
    start = time.perf_counter()
    bar = tqdm(
        total=settings.steps, desc=desc or ("SAIM" if saim else "no SAIM"), unit="step", leave=False, mininterval=1.0
    )
    step = 0
    while True:
        elapsed = time.perf_counter() - start
        if settings.steps is not None and step >= settings.steps:
            break
        if settings.steps is None and elapsed >= settings.seconds:
            break
        x0 = _batch(pairs, settings.batch_pairs, settings.flips, gen)
        t = torch.randint(0, settings.timesteps, (settings.batch_pairs,), generator=gen).repeat_interleave(2)
        noise = torch.randn(x0.shape, generator=gen)
        ab = alpha_bar[t][:, None, None, None]
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        for group in opt.param_groups:
            group["lr"] = settings.lr * min(1.0, (step + 1) / max(settings.warmup, 1))
        with autocast("cpu", settings.mixed_precision):
            pred = model(xt, t)
        losses.append(training_step(F.mse_loss(pred.float(), x0), opt, scaler))
        _ema_update(ema, model, settings.ema if step >= settings.warmup else 0.0)
        step += 1
        bar.update(1)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-25:]):.4f}")
    bar.close()
    seconds = time.perf_counter() - start
    log.info("%s: %d steps in %.0f s, last loss %.4f", desc or saim, step, seconds, np.mean(losses[-50:] or [0]))
    return TrainResult(ema.eval(), step, seconds, losses)


@dataclass
class StepOutput:
    prev_sample: torch.Tensor


class CosineDDIM:
    """Deterministic DDIM (eta = 0) from an x0-prediction over the cosine schedule, with the part of diffusers'
    scheduler interface that ``denoise`` uses. ``steps`` timesteps from ``timesteps - 1`` down to 0, evenly spaced
    and rounded; the last step returns the predicted x0 itself. The arithmetic runs in fp32."""

    def __init__(self, steps: int, timesteps: int = 200) -> None:
        if not 1 <= steps <= timesteps:
            raise ValueError(f"sampling steps must be in [1, {timesteps}], got {steps}")
        self.alpha_bar = cosine_alphas_cumprod(timesteps)
        self.timesteps = [int(t) for t in np.linspace(timesteps - 1, 0, steps).round().astype(int)]
        self._next = dict(zip(self.timesteps, self.timesteps[1:]))

    def scale_model_input(self, sample: torch.Tensor, timestep: int) -> torch.Tensor:
        return sample

    def step(self, model_output: torch.Tensor, timestep: int, sample: torch.Tensor) -> StepOutput:
        """model_output: the predicted x0 (already clamped to [-1, 1]) for ``sample`` at ``timestep``."""
        if timestep not in self._next:
            return StepOutput(model_output)
        ab, ab_prev = self.alpha_bar[timestep], self.alpha_bar[self._next[timestep]]
        eps = (sample - ab.sqrt() * model_output) / (1 - ab).sqrt()
        return StepOutput(ab_prev.sqrt() * model_output + (1 - ab_prev).sqrt() * eps)


@torch.no_grad()
def ddim_sample(
    model: PairUNet,
    n_pairs: int,
    size: int,
    steps: int = 25,
    timesteps: int = 200,
    seed: int = 0,
    mixed_precision: str = "no",
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic DDIM (eta = 0) from the x0-prediction: ``n_pairs`` (global, anomaly) image pairs.

    Returns two (n_pairs, size, size, 3) arrays in [0, 1]. Every row starts from its own seeded noise; the
    network runs in ``mixed_precision``, the DDIM arithmetic in fp32.
    """
    scheduler = CosineDDIM(steps, timesteps)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((2 * n_pairs, 3, size, size), generator=gen)

    def denoiser(x: torch.Tensor, t: int) -> torch.Tensor:
        with autocast("cpu", mixed_precision):
            return model(x, torch.full((x.shape[0],), int(t), dtype=torch.long)).float().clamp(-1, 1)

    glob, part = split(denoise(denoiser, scheduler, x))
    return to_image_space(glob), to_image_space(part)
