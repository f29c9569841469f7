"""A training run held in memory: the one owner of init, step and resume for every host.

``TrainingSession`` owns what is trained (the ``DualAdapter``, the ``TextLoRA``, the optimiser), initialises them
from the seed in one order, continues a ``TrainedDual`` and runs ``step.pair_loss`` with the host's forward and
latents (``latents.LatentCache``). ``anodiff train`` (``Trainer``: diffusers + accelerate) and the Train Dual LoRA
node (ComfyUI) both drive it, so the same seed and data give the same model in both wherever their forwards agree.
``TrainedDual`` is its frozen result: a ``DualFile`` plus the optimiser state, enough to continue bit for bit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..model.config import PROMPT_ANOMALY, PROMPT_GLOBAL, DualConfig
from ..model.dual import DualAdapter
from ..weights.schema import DualFile, to_dual_file
from ..weights.text import TextLoRA, text_shapes
from .step import (
    Forward,
    SampleLatents,
    apply_gradients,
    draw_batch,
    load_optimizer_tensors,
    make_optimizer,
    optimizer_tensors,
    pair_loss,
    step_generator,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionConfig:
    """The knobs of a run; defaults follow the authors (lr 2e-5, batch 4, rank 32, AdamW wd 1e-2, clip 1.0)."""

    rank: int = 32
    text_rank: int = 32
    lr: float = 2e-5
    batch_size: int = 4
    seed: int = 32
    bcm: bool = False
    saim: bool = True
    saim_zero_init: bool = False
    train_text_encoder: bool = True
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    adam8bit: str = "auto"
    resolution: int = 512
    prompt_global: str = PROMPT_GLOBAL
    prompt_anomaly: str = PROMPT_ANOMALY

    @property
    def dual_config(self) -> DualConfig:
        return DualConfig(
            rank=self.rank, saim=self.saim, saim_zero_init=self.saim_zero_init, bcm=self.bcm, text_rank=self.text_rank
        )


@dataclass(frozen=True)
class TrainedDual:
    """A trained dual model on the CPU: the weight file's content and the optimiser state to resume from."""

    dual: DualFile
    optimizer: dict[str, torch.Tensor] = field(default_factory=dict)
    losses: tuple[float, ...] = ()

    @property
    def steps(self) -> int:
        return int(self.dual.metadata.get("steps", "0"))


class TrainingSession:
    """Trains a ``DualAdapter`` (and a ``TextLoRA``) on a ``FewShotDataset`` with the host's forward.

    ``start``: a ``TrainedDual`` to continue (same data and seed give the weights of one longer run).
    """

    def __init__(
        self,
        config: SessionConfig,
        dataset,
        channels: tuple[int, ...],
        context_dim: int,
        text_shapes: dict[str, tuple[int, int]] | None,
        device: torch.device,
        start: TrainedDual | None = None,
    ) -> None:
        self.config, self.dataset, self.device = config, dataset, torch.device(device)
        with torch.random.fork_rng(devices=[]):  # seeded init without touching the host's global RNG
            torch.manual_seed(config.seed)
            self.adapter = DualAdapter(config.dual_config, channels, context_dim)
            use_text = config.train_text_encoder and text_shapes
            self.text = TextLoRA(text_shapes, config.text_rank) if use_text else None
        self.step, self.losses = 0, []
        if start is not None:
            self._load(start)
        self.adapter.to(self.device)
        if self.text is not None:
            self.text.to(self.device)
        self.params = [p for m in (self.adapter, self.text) if m is not None for p in m.parameters()]
        self.optimizer = make_optimizer(self.params, config.lr, config.weight_decay, config.adam8bit, self.device)
        if start is not None and start.optimizer:
            load_optimizer_tensors(self.optimizer, start.optimizer)
        elif start is not None:
            log.warning("no optimiser state in the model to continue: AdamW starts afresh (not an exact resume)")

    def _load(self, start: TrainedDual) -> None:
        dual, c = start.dual, self.config
        theirs = (dual.config.rank, dual.config.bcm, dual.config.saim)
        if theirs != (c.rank, c.bcm, c.saim) or (dual.has_text_lora and dual.config.text_rank != c.text_rank):
            raise ValueError(
                f"{dual.source}: trained with rank {dual.config.rank} (text {dual.config.text_rank}), bcm "
                f"{dual.config.bcm}, saim {dual.config.saim}; set the same to continue it "
                f"(got rank {c.rank}, bcm {c.bcm})"
            )
        if dual.has_text_lora and self.text is None:
            raise ValueError(f"{dual.source} has a text-encoder LoRA: turn train_text_encoder on to continue it")
        dual.check_unet(self.adapter.channels, self.adapter.context_dim)
        self.adapter.load_state_dict(dual.adapter().state_dict())
        if self.text is not None:
            if not dual.has_text_lora:
                raise ValueError(f"{dual.source} has no text-encoder LoRA: turn train_text_encoder off to continue it")
            self.text.load(dual.text_tensors())
        self.step, self.losses = start.steps, list(start.losses)
        seed = dual.metadata.get("seed")
        if seed is not None and seed != str(self.config.seed):
            log.warning(
                "%s was trained with seed %s, continued with %d: not the run one longer training would give",
                dual.source,
                seed,
                self.config.seed,
            )

    def train_step(
        self,
        forward: Forward,
        sample_latents: SampleLatents,
        alphas_cumprod: torch.Tensor,
        latent_scale: float,
        scaler: torch.amp.GradScaler | None = None,
        rank: int = 0,
        backward: Callable | None = None,
        clip: Callable | None = None,
    ) -> float:
        """One optimiser step; every draw comes from ``step_generator(seed, step, rank)``. Returns the loss.

        ``rank``: this process of a data-parallel run; ``backward``/``clip``: accelerate's. An exception leaves
        the session at the last finished step (the optimiser steps last), so ``result()`` is still exact."""
        g = step_generator(self.config.seed, self.step, rank)
        batch = self.batch(g)
        loss = pair_loss(batch, g, sample_latents, forward, alphas_cumprod, latent_scale, self.device, self.config.bcm)
        apply_gradients(loss, self.params, self.optimizer, self.config.max_grad_norm, backward, clip, scaler)
        self.step += 1
        self.losses.append(float(loss.detach()))
        return self.losses[-1]

    def batch(self, g: torch.Generator) -> dict[str, torch.Tensor]:
        """The batch of the current step (``step.draw_batch``)."""
        return draw_batch(self.dataset, self.step, self.config.batch_size, g)

    def result(self, images: int, source: str = "anodiff-comfyui") -> TrainedDual:
        """Snapshot on the CPU (the session may go on training; the snapshot never changes)."""
        c = self.config
        adapter = DualAdapter(self.adapter.config, self.adapter.channels, self.adapter.context_dim)
        adapter.load_state_dict({k: v.detach().float().cpu() for k, v in self.adapter.state_dict().items()})
        dual = to_dual_file(
            adapter,
            self.text.state() if self.text is not None else None,
            steps=self.step,
            resolution=c.resolution,
            prompt_global=c.prompt_global,
            prompt_anomaly=c.prompt_anomaly,
            seed=c.seed,
            train_images=images,
            source=source,
        )
        return TrainedDual(dual, optimizer_tensors(self.optimizer), tuple(self.losses))


__all__ = ["SessionConfig", "TextLoRA", "TrainedDual", "TrainingSession", "text_shapes"]
