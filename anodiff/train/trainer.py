"""Few-shot DualAnoDiff training: per-branch UNet LoRA + SAIM (+ BCM) + shared text-encoder LoRA on frozen SD1.5.

Every random draw of step ``k`` (batch, flips, timesteps, noise, VAE sampling) comes from a generator seeded with
``(seed, k, rank)``, so a run resumed from a checkpoint continues exactly like the uninterrupted run, and under
``accelerate launch``/``torchrun`` each process trains on its own batch (data parallel: the effective batch is
``batch_size`` x processes; results depend on the seed and the number of processes only). The few-shot images'
VAE posteriors are encoded once per (image, flips) and sampled with the step's generator, as the uncached
encode would. Checkpoints (``checkpoints``: the model, usable as it is, and the optimiser state with the run's
fingerprint, also at the final step), previews and the final file are written once, by the main process.
Init, step and resume are ``session.TrainingSession``'s, the one the Train Dual LoRA node drives too; this module
adds the diffusers host (UNet, CLIP, VAE), accelerate, checkpoints on disk and Ctrl-C (``stop.AgreedStop``).
Official recipe: ``dual-interrelated_diff/train_dreambooth_lora.py`` (see the reference §6).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from torch import nn

from ..common.precision import autocasting, fallback_fp16_scaler, torch_dtype
from ..sd15.processor import DualUNet
from ..weights.text import attach_text_lora, text_shapes
from .checkpoints import CHECKPOINT, latest_checkpoint, read_checkpoint, run_fingerprint, set_aside, write_checkpoint
from .config import TrainConfig
from .latents import LatentCache
from .session import TrainedDual, TrainingSession
from .step import make_optimizer as build_optimizer
from .step import optimizer_tensors, pair_loss, step_generator
from .stop import AgreedStop
from .train_model import DualTrainModel, trainable_parameters

log = logging.getLogger(__name__)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped ``train()`` after writing ``checkpoint`` at ``step``: a KeyboardInterrupt, so that a caller
    looping over jobs stops too instead of taking the interrupted job for trained."""

    def __init__(self, checkpoint: Path, step: int) -> None:
        super().__init__(f"interrupted at step {step}: checkpoint {checkpoint}")
        self.checkpoint, self.step = checkpoint, step


def make_optimizer(params: list[nn.Parameter], config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    return build_optimizer(params, config.lr, config.weight_decay, config.adam8bit, device)


class Trainer:
    """Builds the model and data from a ``TrainConfig`` and runs (or resumes) the loop."""

    def __init__(self, config: TrainConfig) -> None:
        from accelerate import Accelerator

        from ..data import fewshot
        from ..sd15.load import load_sd15

        self.config = config
        self.out = Path(config.output)
        self.final = self.out / f"{config.model_name}.safetensors"
        self.ckpt_dir = self.out / "checkpoints"
        if self.final.exists() and not (config.force or config.resume):
            raise FileExistsError(f"{self.final} exists; pass --force to train again or --resume to continue")
        samples = fewshot.find_samples(config.data, config.category, config.anomaly)
        self.samples = fewshot.split_train(samples, config.split)
        fewshot.validate_samples(self.samples)
        self.dataset = fewshot.FewShotDataset(
            self.samples, resolution=config.resolution, flips=config.flips, background=config.bcm, seed=config.seed
        )
        # cpu=True is what makes accelerate pick gloo (MULTI_CPU) for several processes without a GPU
        gpu = torch.cuda.is_available() or torch.backends.mps.is_available()
        self.accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=not gpu)
        self.fingerprint = run_fingerprint(config, self.samples, self.accelerator.num_processes)
        device = self.accelerator.device
        self.scaler = fallback_fp16_scaler(self.accelerator, config.mixed_precision)  # None: accelerate's own
        self.sd = load_sd15(config.base)
        weight_dtype = torch_dtype(config.mixed_precision)
        self.sd.vae.to(device, dtype=torch.float32)
        self.sd.unet.to(device, dtype=weight_dtype)
        channels, context = self.sd.widths
        text_encoder = self.sd.text_encoder.to(device)
        shapes = text_shapes(text_encoder.named_modules()) if config.train_text_encoder else None
        start = self._resume_start() if config.resume else None
        # the one init/step/resume owner, shared with the Train Dual LoRA node
        self.session = TrainingSession(config.session_config, self.dataset, channels, context, shapes, device, start)
        self.adapter = self.session.adapter
        if self.session.text is not None:
            attach_text_lora(text_encoder, self.session.text)
        if config.gradient_checkpointing:
            # load_sd15 leaves the modules in eval(), where transformers (and diffusers < 0.32) skip checkpointing;
            # train() changes nothing else: SD1.5's UNet and CLIP have no dropout
            self.sd.unet.enable_gradient_checkpointing()
            self.sd.unet.train()
            if config.train_text_encoder:
                enable = getattr(text_encoder, "activation_checkpointing_enable", None)
                (enable or text_encoder.gradient_checkpointing_enable)()
                text_encoder.train()
        ids = self.sd.tokenizer(
            [config.prompt_global, config.prompt_anomaly],
            padding="max_length",
            max_length=min(self.sd.tokenizer.model_max_length, 77),
            truncation=True,
            return_tensors="pt",
        ).input_ids
        self.model = DualTrainModel(DualUNet(self.sd.unet, self.adapter), text_encoder, ids).to(device)
        self.latents = LatentCache(self._encode, config.cache_latents)
        if (
            not config.resume and self.accelerator.is_main_process
        ):  # last, so that a run that fails to start moves nothing
            set_aside(self.ckpt_dir)  # a later --resume must not continue the earlier run's checkpoints
        self.model, self.session.optimizer = self.accelerator.prepare(self.model, self.session.optimizer)
        self.stop = AgreedStop(self.accelerator)
        self.interrupted = False
        self.losses: list[float] = []

    # -- checkpoints -------------------------------------------------------------------------------------------

    @property
    def step(self) -> int:
        return self.session.step

    @step.setter
    def step(self, value: int) -> None:
        self.session.step = value

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.session.optimizer

    @property
    def encodes(self) -> int:
        """VAE encoder calls: what the latent cache saves."""
        return self.latents.encodes

    @property
    def _unwrapped(self) -> DualTrainModel:
        return self.accelerator.unwrap_model(self.model)

    def model_file(self):
        return self.session.result(len(self.samples), source="anodiff").dual

    def save_checkpoint(self, model: Path | None = None) -> Path:
        """The optimiser state (with the run fingerprint) and the model of this step; ``model``: a model file of
        this step already written (the final one), linked rather than written again."""
        if not self.accelerator.is_main_process:
            return self.ckpt_dir
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        path = self.ckpt_dir / f"step-{self.step:06d}.safetensors"
        state = optimizer_tensors(self.optimizer)
        return write_checkpoint(path, self.step, state, self.fingerprint, model or self.model_file())

    def _resume_start(self) -> TrainedDual | None:
        """The newest checkpoint of this run as the session's start (``check_same_run`` accepts it first)."""
        found = latest_checkpoint(self.ckpt_dir)
        if found is None:
            log.warning("--resume: no checkpoint in %s; starting at step 0", self.ckpt_dir)
            return None
        step, path = found
        dual, state = read_checkpoint(path, self.fingerprint, self.config.resume_changed)
        log.info("resuming from %s at step %d", path, step)
        return TrainedDual(dual, state)

    # -- the loop ----------------------------------------------------------------------------------------------

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """``LatentCache``'s encoder: (B, 3, R, R) in [-1, 1] -> (B, 8, h, w) VAE posterior (mean, log-variance)."""
        return self.sd.vae.encode(pixels.to(self.accelerator.device)).latent_dist.parameters

    def loss_at(self, step_batch: dict[str, torch.Tensor], g: torch.Generator) -> torch.Tensor:
        """The step's loss on ``step_batch`` with the draws of ``g`` (what ``train_step`` minimises)."""
        return pair_loss(
            step_batch,
            g,
            self.latents,
            self.forward,
            self.sd.scheduler.alphas_cumprod,
            self.sd.latent_scale,
            self.accelerator.device,
            bcm=self.config.bcm,
        )

    @property
    def forward(self):
        """The model, run under fp16 autocast where accelerate does not do it itself (``fallback_fp16_scaler``)."""
        return self.model if self.scaler is None else autocasting(self.model, self.accelerator.device, "fp16")

    def batch(self, g: torch.Generator) -> dict[str, torch.Tensor]:
        return self.session.batch(g)

    def train_step(self) -> float:
        clip = self.accelerator.clip_grad_norm_ if self.accelerator.sync_gradients else (lambda *a: None)
        return self.session.train_step(
            self.forward,
            self.latents,
            self.sd.scheduler.alphas_cumprod,
            self.sd.latent_scale,
            self.scaler,
            rank=self.rank,
            backward=self.accelerator.backward,
            clip=clip,
        )

    def run(self, until: int | None = None) -> Path:
        """Train to ``config.steps`` (or ``until``); returns the final file, or the checkpoint written on Ctrl-C."""
        from tqdm.auto import tqdm

        target = min(until or self.config.steps, self.config.steps)
        bar = tqdm(
            total=target,
            initial=self.step,
            desc=self.config.model_name,
            disable=not (self.config.progress and self.accelerator.is_main_process),
        )  # one bar, not one per GPU
        history = self.losses
        try:
            self.stop.listen()
            while self.step < target:
                start = time.perf_counter()
                loss = self.train_step()
                history.append(loss)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", s_per_step=f"{time.perf_counter() - start:.2f}")
                if self.stop.agreed():  # every process stops after this same step
                    self.interrupted = True
                    log.warning("interrupted: writing the checkpoint of step %d", self.step)
                    path = self.save_checkpoint()
                    self.accelerator.wait_for_everyone()
                    return path
                if self.step % self.config.checkpoint_every == 0 and self.step < self.config.steps:
                    self.save_checkpoint()
                if self.step % self.config.preview_every == 0:
                    self.write_preview()
        finally:
            bar.close()
            self.stop.restore()
        if self.step >= self.config.steps:
            if self.accelerator.is_main_process:
                self.model_file().save(self.final)
                self.save_checkpoint(model=self.final)  # so that --resume --steps <more> continues from here
            self.accelerator.wait_for_everyone()
            return self.final
        return self.save_checkpoint()

    def close(self) -> None:
        """End the run: under torchrun/accelerate launch this closes the process group (gloo hangs otherwise)."""
        self.accelerator.end_training()

    def write_preview(self) -> Path | None:
        """global | anomaly part | mask of one sample at the current step, next to the checkpoints."""
        from .render import render_preview

        if not self.accelerator.is_main_process:
            return None
        path = self.ckpt_dir / f"preview-{self.step:06d}.png"
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        prompts = (self.config.prompt_global, self.config.prompt_anomaly)
        render_preview(self.sd, self._unwrapped.dual_unet, prompts, self.config.resolution, self.config.seed, path)
        return path


def train(config: TrainConfig) -> Path:
    """Train (or resume) one model; returns the final file. Raises ``TrainingInterrupted`` after Ctrl-C."""
    trainer = Trainer(config)
    try:
        path = trainer.run()
    finally:
        trainer.close()
    if trainer.interrupted:
        raise TrainingInterrupted(path, trainer.step)
    return path


__all__ = [
    "CHECKPOINT",
    "DualTrainModel",
    "TrainConfig",
    "Trainer",
    "TrainingInterrupted",
    "latest_checkpoint",
    "make_optimizer",
    "step_generator",
    "train",
    "trainable_parameters",
]
