"""The Train Dual LoRA loop on ComfyUI's MODEL/CLIP/VAE: progress bar, previews, autosave, interrupt, cleanup.

Each step is ``anodiff.train.session.TrainingSession.train_step`` (the ``anodiff train`` step) with the forward of
``train_patch.unet_forward`` and the shared ``anodiff.train.latents.LatentCache``. Cancel is honoured after the
running step (an interrupt raised by the progress bar or inside a preview ends the run there, never mid-step).
Nothing trained is lost: every ``autosave_every`` steps, and when the run ends by Cancel, out of memory or any
other error, the weights and their optimiser state are written (``train_save.autosave_trained``) before the
exception propagates; ``resume_file`` continues them exactly. The clones are unloaded on every path, so the user's
MODEL and CLIP are as they were and nothing is patched.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from dataclasses import dataclass

import torch

from ...anodiff.data.training_set import FewShotDataset
from ...anodiff.train.latents import LatentCache
from ...anodiff.train.session import SessionConfig, TrainedDual, TrainingSession
from ...anodiff.weights.text import text_shapes
from ..model.attach import check_sd15_layout, unet_widths
from ..model.patch import compute_dtype, find_dual
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
from .train_save import autosave_trained

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    steps: int
    gradient_checkpointing: bool = False
    preview_every: int = 0
    autosave_every: int = 500
    """Steps between autosaves (0: only when the run stops on Cancel or an error)."""


def build_dataset(
    images: torch.Tensor, masks: torch.Tensor, backgrounds: torch.Tensor | None, resolution: int, flips: bool, seed: int
) -> FewShotDataset:
    """IMAGE (B, H, W, C) / MASK (B, H, W) batches -> the few-shot dataset under ``anodiff.data``'s rules."""
    if images.dim() != 4 or images.shape[-1] not in (3, 4):
        raise ValueError(
            f"Train Dual LoRA: images must be an IMAGE batch (B, H, W, 3), got shape {tuple(images.shape)}"
        )
    if masks.dim() == 2:
        masks = masks[None]
    if masks.shape[0] == 1 and images.shape[0] > 1:
        raise ValueError(f"Train Dual LoRA: masks: 1 mask for {images.shape[0]} images; give one mask per image")
    bgs = None if backgrounds is None else [b[..., :3].cpu().numpy() for b in backgrounds]
    return FewShotDataset.from_arrays(
        [i[..., :3].cpu().numpy() for i in images],
        [m.cpu().numpy() for m in masks],
        bgs,
        resolution=resolution,
        flips=flips,
        seed=seed,
    )


def vae_encoder(vae):
    """``LatentCache``'s encoder over ComfyUI's VAE: (B, 3, R, R) in [-1, 1] -> the posterior mean (B, 4, h, w) on
    the CPU (ComfyUI's encoder gives no variance)."""

    def encode(pixels: torch.Tensor) -> torch.Tensor:
        return vae.encode(((pixels + 1.0) / 2.0).permute(0, 2, 3, 1)).float().cpu()

    return encode


_RUNS = itertools.count()


def autosave_name(seed: int) -> str:
    """This run's autosave file name (one per run, replaced as the run goes on; earlier runs' files are kept)."""
    return f"train_{time.strftime('%Y%m%d-%H%M%S')}_{os.getpid()}-{next(_RUNS)}_seed{seed}"


def alphas_cumprod(model) -> torch.Tensor:
    """The DDPM schedule of the MODEL, from its sigmas (sigma^2 = (1 - a) / a)."""
    sigmas = model.get_model_object("model_sampling").sigmas.float().cpu()
    return 1.0 / (sigmas * sigmas + 1.0)


def run_training(
    model,
    clip,
    vae,
    dataset: FewShotDataset,
    config: SessionConfig,
    options: RunOptions,
    start: TrainedDual | None = None,
    preview=None,
) -> TrainedDual:
    """Train ``options.steps`` more steps; returns the result (CPU tensors). ``preview(model, clip, step)`` may
    return an image for the progress bar. Cancel or an error: autosaved, then raised."""
    import comfy.model_management as mm

    check_sd15_layout(model)
    if find_dual(model) is not None:
        raise ValueError(
            "Train Dual LoRA: this MODEL already has a Dual LoRA; connect the plain checkpoint MODEL to Train Dual "
            "LoRA and pass the dual model to continue as 'resume'"
        )
    channels, context_dim = unet_widths(model)
    shapes = text_shapes(clip.cond_stage_model.named_modules()) if config.train_text_encoder else None
    if config.train_text_encoder and not shapes:
        raise ValueError(
            "Train Dual LoRA: train_text_encoder: this CLIP has no SD1.5 text projections (text_model...q_proj)"
        )
    with torch.inference_mode(False):
        session = TrainingSession(config, dataset, channels, context_dim, shapes, model.load_device, start)
        first, name = session.step, autosave_name(config.seed)

        def save() -> str:
            return autosave_trained(session.result(len(dataset)), name)

        m = training_model(model, session.adapter)
        c = training_clip(clip, session.text)
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
                cancelled = _loop(
                    session, forward, vae, model, options, lambda step: _preview(preview, m, c, step), save
                )
        except BaseException as exc:  # out of memory, any error, a second Cancel: keep what was trained
            _save_on_failure(save, session.step, first, exc)
            raise
        finally:
            release(m, c.patcher)
        if cancelled:
            _save_on_failure(save, session.step, first, None)
            mm.interrupt_current_processing(False)
            raise mm.InterruptProcessingException()
        if options.autosave_every:
            save()
        return session.result(len(dataset))


def _preview(preview, m, c, step: int):
    if preview is None:
        return None
    with torch.no_grad():
        return preview(m, c, step)


def _loop(session: TrainingSession, forward, vae, model, options: RunOptions, preview, save) -> bool:
    """The steps; True when Cancel stopped the run. Cancel is looked at only between steps: an interrupt raised
    by the progress bar hook or inside a preview's sampling ends the run after the step that just finished."""
    import comfy.model_management as mm
    import comfy.utils

    scaler = torch.amp.GradScaler(model.load_device.type) if compute_dtype(model) == torch.float16 else None
    latents, schedule = LatentCache(vae_encoder(vae)), alphas_cumprod(model)
    scale = float(model.model.latent_format.scale_factor)
    bar = comfy.utils.ProgressBar(options.steps)
    for k in range(options.steps):
        loss = session.train_step(forward, latents, schedule, scale, scaler)
        log.debug("step %d loss %.5f", session.step, loss)
        if options.autosave_every and session.step % options.autosave_every == 0 and k + 1 < options.steps:
            save()
        try:
            due = options.preview_every and (k + 1) % options.preview_every == 0
            bar.update_absolute(k + 1, options.steps, preview(session.step) if due else None)
        except mm.InterruptProcessingException:
            return True
        if mm.processing_interrupted():
            return True
    return False


def _save_on_failure(save, step: int, first: int, exc: BaseException | None) -> None:
    """Autosave the steps trained since ``first`` (none: nothing to keep) and say where, on the log and, for an
    exception, in its notes; a failing save is logged and never hides ``exc``."""
    if step <= first:
        return
    why = "Cancel" if exc is None else type(exc).__name__
    try:
        name = save()
    except Exception:
        log.exception("Train Dual LoRA: could not autosave step %d after %s", step, why)
        return
    message = (
        f"Train Dual LoRA stopped by {why} after step {step}: the weights and optimiser state are saved as "
        f"models/dualanodiff/{name}; choose it as resume_file to continue exactly"
    )
    log.warning(message)
    if exc is not None and hasattr(exc, "add_note"):
        exc.add_note(message)


def as_image_batch(items: list[dict], key: str) -> torch.Tensor:
    """(B, R, R, 3) IMAGE in [0, 1] from ``FewShotDataset.items()``' (3, R, R) tensors in [-1, 1]."""
    return torch.stack([(it[key].permute(1, 2, 0) + 1.0) / 2.0 for it in items]).clamp(0.0, 1.0)
