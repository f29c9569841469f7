"""The DualAnoDiff training step, shared by ``anodiff train`` (diffusers) and the Train Dual LoRA node (ComfyUI).

Only the model forward differs between the two: the caller passes it in. Everything random about step ``k`` is
drawn here from one generator (``train.step_generator``) in a fixed order (batch rows, latent samples,
timesteps, pair noise, background samples, background noise), so a resumed run replays the draws of the
uninterrupted one. Official recipe: ``dual-interrelated_diff/train_dreambooth_lora.py`` (reference §6).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ..model.pairs import interleave

PAIR_KEYS = ("image", "anomaly")
BACKGROUND_KEYS = ("background",)

Forward = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
"""(noisy (2B, 4, h, w) interleaved pairs, timesteps (2B,), noised background (B, 4, h, w) or None) -> eps."""

SampleLatents = Callable[[dict, tuple[str, ...], torch.Generator], torch.Tensor]
"""(step batch, keys, generator) -> unscaled latents of the rows ``keys`` (two keys: interleaved)."""


class StepDataset(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> dict[str, torch.Tensor]: ...
    def set_epoch(self, epoch: int) -> None: ...
    def flips_for(self, index: int) -> tuple[bool, bool]: ...


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """The generator of every draw of one step on one process; rank 0 keeps the single-process stream."""
    if rank == 0:
        return torch.Generator().manual_seed(seed * 1_000_003 + step)
    state = np.random.SeedSequence([seed, step, rank]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def draw_batch(dataset: StepDataset, step: int, batch_size: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """The batch of one step: pixels of each item plus ``index`` and ``flips`` (what latent caches are keyed by).

    Rows are drawn with replacement from ``g``; flips come from the dataset's ``(seed, step, index)``.
    """
    dataset.set_epoch(step)
    index = torch.randint(len(dataset), (batch_size,), generator=g).tolist()
    items = [dataset[i] for i in index]
    out = {k: torch.stack([it[k] for it in items]) for k in items[0]}
    out["index"] = torch.tensor(index)
    out["flips"] = torch.tensor([dataset.flips_for(i) for i in index])
    return out


def cache_slots(step_batch: dict[str, torch.Tensor], key: str) -> list[tuple]:
    """One hashable slot per row, ``(key, image index, flips...)``: the rows whose VAE encoding can be reused."""
    return [(key, i, *f) for i, f in zip(step_batch["index"].tolist(), step_batch["flips"].tolist())]


def add_noise(
    alphas_cumprod: torch.Tensor, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """DDPM forward process ``sqrt(a_t) x + sqrt(1 - a_t) eps``, computed as diffusers' ``DDPMScheduler.add_noise``.

    latents, noise: (R, C, h, w); t: (R,) integer timesteps.
    """
    alphas = alphas_cumprod.to(device=latents.device, dtype=latents.dtype)
    t = t.to(latents.device)
    sqrt_alpha = (alphas[t] ** 0.5).flatten().view(-1, 1, 1, 1)
    sqrt_one_minus = ((1 - alphas[t]) ** 0.5).flatten().view(-1, 1, 1, 1)
    return sqrt_alpha * latents + sqrt_one_minus * noise


def pair_loss(
    step_batch: dict[str, torch.Tensor],
    g: torch.Generator,
    sample_latents: SampleLatents,
    forward: Forward,
    alphas_cumprod: torch.Tensor,
    latent_scale: float,
    device: torch.device,
    bcm: bool = False,
) -> torch.Tensor:
    """MSE between the noise and the prediction on both branches: one timestep per pair, shared by its two rows.

    The background latents (BCM) stay unscaled, as in the authors' code, and are noised at the pair's timestep.
    Latents may come from any device (a host's VAE cache on the CPU); everything the forward sees is on ``device``.
    """
    with torch.no_grad():
        latents = sample_latents(step_batch, PAIR_KEYS, g).to(device) * latent_scale
    pairs = latents.shape[0] // 2
    t = torch.randint(0, alphas_cumprod.shape[0], (pairs,), generator=g)
    timesteps = t.repeat_interleave(2).to(device)
    noise = torch.randn(latents.shape, generator=g).to(device)
    noisy = add_noise(alphas_cumprod, latents, noise, timesteps)
    background = None
    if bcm:
        with torch.no_grad():
            bg = sample_latents(step_batch, BACKGROUND_KEYS, g).to(device)
        background = add_noise(alphas_cumprod, bg, torch.randn(bg.shape, generator=g).to(device), t.to(device))
    pred = forward(noisy, timesteps, background)
    return F.mse_loss(pred.float(), noise.float())


def interleave_rows(rows: Sequence[torch.Tensor]) -> torch.Tensor:
    """Two per-key tensors (B, ...) -> (2B, ...) pairs ``[x0, y0, x1, y1, ...]``; one tensor is returned as is."""
    return interleave(*rows) if len(rows) == 2 else rows[0]


def apply_gradients(
    loss: torch.Tensor,
    params: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    max_grad_norm: float,
    backward: Callable[[torch.Tensor], None] | None = None,
    clip: Callable[[list[torch.nn.Parameter], float], object] | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """Backward, clip the gradient norm, step and zero the optimiser.

    accelerate passes its own ``backward``/``clip``; a host computing in float16 without accelerate passes a
    ``GradScaler`` (the gradients are unscaled before clipping, and a step with inf/NaN gradients is skipped).
    """
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    else:
        (backward or (lambda x: x.backward()))(loss)
    (clip or torch.nn.utils.clip_grad_norm_)(params, max_grad_norm)
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def make_optimizer(
    params: list[torch.nn.Parameter], lr: float, weight_decay: float, adam8bit: str, device: torch.device
) -> torch.optim.Optimizer:
    """AdamW as the authors (betas 0.9/0.999, eps 1e-8); 8-bit (bitsandbytes) on CUDA with ``auto`` or ``on``."""
    if adam8bit not in ("auto", "on", "off"):
        raise ValueError(f"adam8bit must be auto, on or off, got {adam8bit!r}")
    if adam8bit == "on" or (adam8bit == "auto" and device.type == "cuda"):
        try:  # optional, never a requirement of the nodes: imported by name only when asked for
            bnb = importlib.import_module("bitsandbytes")
            return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=weight_decay)
        except ImportError:
            if adam8bit == "on":
                raise ValueError("adam8bit=on needs bitsandbytes: pip install bitsandbytes") from None
    return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay, eps=1e-8)


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Optimiser state as flat tensors keyed by parameter position (safetensors holds no pickles)."""
    out = {}
    for i, param in enumerate(p for group in optimizer.param_groups for p in group["params"]):
        for key, value in optimizer.state.get(param, {}).items():
            out[f"{i}.{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return out


def load_optimizer_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    """Inverse of ``optimizer_tensors``; a key naming a parameter the optimiser lacks is refused."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        if int(index) >= len(params):
            raise ValueError(
                f"optimiser state key {key!r} names parameter {index}, but the model has {len(params)}: "
                "the state belongs to a model of another shape (rank, BCM, text encoder)"
            )
        param = params[int(index)]
        state = optimizer.state.setdefault(param, {})
        state[name] = value.to(param.device) if name != "step" else value.clone()
