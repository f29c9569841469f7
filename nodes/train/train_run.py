"""The Train Dual LoRA loop on ComfyUI's MODEL/CLIP/VAE: progress bar, previews, interrupt, cleanup.

Each step is ``anodiff.train.session.TrainingSession.train_step`` (the ``anodiff train`` step) with the forward of
``train_patch.unet_forward``. An interrupt is honoured after the running step: the clones are unloaded and
``InterruptProcessingException`` propagates, so the user's MODEL and CLIP are as they were and nothing is patched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ...anodiff.data.training_set import FewShotDataset
from ...anodiff.train.session import SessionConfig, TrainedDual, TrainingSession, text_shapes
from ...anodiff.train.step import cache_slots, interleave_rows
from ..model.patch import check_sd15_layout, compute_dtype, find_dual, unet_widths
from .train_patch import (
    checkpointed_blocks,
    differentiable_clip,
    frozen,
    prompt_context,
    release,
    training_clip,
    training_model,
    unet_forward,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    steps: int
    gradient_checkpointing: bool = False
    preview_every: int = 0


def build_dataset(images: torch.Tensor, masks: torch.Tensor, backgrounds: torch.Tensor | None, resolution: int,
                  flips: bool, seed: int) -> FewShotDataset:  # fmt: skip
    """IMAGE (B, H, W, C) / MASK (B, H, W) batches -> the few-shot dataset under ``anodiff.data``'s rules."""
    if images.dim() != 4 or images.shape[-1] not in (3, 4):
        raise ValueError(f"images must be an IMAGE batch (B, H, W, 3), got shape {tuple(images.shape)}")
    if masks.dim() == 2:
        masks = masks[None]
    if masks.shape[0] == 1 and images.shape[0] > 1:
        raise ValueError(f"masks: 1 mask for {images.shape[0]} images; give one mask per image")
    bgs = None if backgrounds is None else [b[..., :3].cpu().numpy() for b in backgrounds]
    return FewShotDataset.from_arrays([i[..., :3].cpu().numpy() for i in images], [m.cpu().numpy() for m in masks],
                                      bgs, resolution=resolution, flips=flips, seed=seed)  # fmt: skip


class LatentCache:
    """``step.SampleLatents`` over ComfyUI's VAE: each (key, image, flips) encoded once; the VAE gives the posterior
    mean (ComfyUI's encoder does not expose the variance), so no draw is taken from the generator."""

    def __init__(self, vae) -> None:
        self.vae, self.slots, self.encodes = vae, {}, 0

    def __call__(self, step_batch: dict, keys: tuple[str, ...], g: torch.Generator) -> torch.Tensor:
        rows = []
        for key in keys:
            per_key = []
            for k, slot in enumerate(cache_slots(step_batch, key)):
                if slot not in self.slots:
                    pixels = (step_batch[key][k : k + 1] + 1.0) / 2.0  # (1, 3, R, R) in [-1, 1] -> [0, 1]
                    self.slots[slot] = self.vae.encode(pixels.permute(0, 2, 3, 1)).float().cpu()
                    self.encodes += 1
                per_key.append(self.slots[slot])
            rows.append(torch.cat(per_key))
        return interleave_rows(rows)


def alphas_cumprod(model) -> torch.Tensor:
    """The DDPM schedule of the MODEL, from its sigmas (sigma^2 = (1 - a) / a)."""
    sigmas = model.get_model_object("model_sampling").sigmas.float().cpu()
    return 1.0 / (sigmas * sigmas + 1.0)


def run_training(model, clip, vae, dataset: FewShotDataset, config: SessionConfig, options: RunOptions,
                 start: TrainedDual | None = None, preview=None) -> TrainedDual:  # fmt: skip
    """Train ``options.steps`` more steps; returns the result (CPU tensors). ``preview(model, clip, step)`` may
    return an image for the progress bar."""
    import comfy.model_management as mm
    import comfy.utils

    check_sd15_layout(model)
    if find_dual(model) is not None:
        raise ValueError("this MODEL already has a Dual LoRA; connect the plain checkpoint MODEL to Train Dual LoRA "
                         "and pass the dual model to continue as 'resume'")  # fmt: skip
    channels, context_dim = unet_widths(model)
    shapes = text_shapes(clip.cond_stage_model.named_modules()) if config.train_text_encoder else None
    if config.train_text_encoder and not shapes:
        raise ValueError("train_text_encoder: this CLIP has no SD1.5 text projections (text_model...q_proj)")
    with torch.inference_mode(False):
        session = TrainingSession(config, dataset, channels, context_dim, shapes, model.load_device, start)
        m = training_model(model, session.adapter)
        c = training_clip(clip, session.text)
        scaler = torch.amp.GradScaler(m.load_device.type) if compute_dtype(m) == torch.float16 else None
        latents, schedule = LatentCache(vae), alphas_cumprod(model)
        scale = float(model.model.latent_format.scale_factor)
        bar = comfy.utils.ProgressBar(options.steps)
        try:
            with (
                frozen(m.model, c.cond_stage_model),
                checkpointed_blocks(m.model.diffusion_model, options.gradient_checkpointing),
                differentiable_clip(c.cond_stage_model, session.text is not None),
            ):
                mm.load_models_gpu([m], force_full_load=True)
                forward = unet_forward(
                    m, prompt_context(c, (config.prompt_global, config.prompt_anomaly), session.text is not None)
                )
                for k in range(options.steps):
                    loss = session.train_step(forward, latents, schedule, scale, scaler)
                    image = None
                    if preview is not None and options.preview_every and (k + 1) % options.preview_every == 0:
                        with torch.no_grad():
                            image = preview(m, c, session.step)
                    log.debug("step %d loss %.5f", session.step, loss)
                    bar.update_absolute(k + 1, options.steps, image)
                    if mm.processing_interrupted():
                        break
        finally:
            release(m, c.patcher)
        mm.throw_exception_if_processing_interrupted()
        return session.result(len(dataset))


def as_image_batch(items: list[dict], key: str) -> torch.Tensor:
    """(B, R, R, 3) IMAGE in [0, 1] from ``FewShotDataset.items()``' (3, R, R) tensors in [-1, 1]."""
    return torch.stack([(it[key].permute(1, 2, 0) + 1.0) / 2.0 for it in items]).clamp(0.0, 1.0)
