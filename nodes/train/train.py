"""Train Dual LoRA: a dual model trained on ComfyUI's own MODEL/CLIP/VAE, returned ready to sample."""

from __future__ import annotations

import numpy as np
import torch

from ...anodiff.model.config import PROMPT_ANOMALY, PROMPT_GLOBAL
from ...anodiff.train.preview import PREVIEW_CFG, PREVIEW_STEPS, preview_sheet
from ...anodiff.train.session import SessionConfig, TrainedDual
from ..model.attach import attach_dual
from .train_inputs import check_resolution, starting_point
from .train_run import RunOptions, build_dataset, run_training
from .train_save import resumable_files

DUAL_WEIGHTS = "DUAL_ANODIFF_WEIGHTS"
LOSS_MAP = "LOSS_MAP"  # core's Loss Graph reads {"loss": [...]} too
NONE = "none"


def preview_pair(vae, config: SessionConfig, seed: int, steps: int = PREVIEW_STEPS):
    """``run_training``'s preview: one pair sampled (DDIM, cfg 2.5, as ``anodiff train``'s) with the model being
    trained, without a progress bar of its own (the bar shows training steps), as the shared ``preview_sheet``."""
    from PIL import Image

    def render(model, clip, step: int):
        from ..sampling.sampler import sample_pairs

        def encode(text: str):
            return clip.encode_from_tokens_scheduled(clip.tokenize(text))

        side = config.resolution // 8
        glob, anomaly, _ = sample_pairs(
            model,
            encode(config.prompt_global),
            encode(config.prompt_anomaly),
            encode(""),
            {"samples": torch.zeros(1, 4, side, side)},
            seed,
            steps,
            PREVIEW_CFG,
            "ddim",
            "ddim_uniform",
            1.0,
            preview=False,
        )
        images = vae.decode(torch.cat([glob["samples"], anomaly["samples"]]))[..., :3]
        images = images.reshape(-1, *images.shape[-3:]).clamp(0, 1).float().cpu().numpy()
        sheet = preview_sheet(images[0], images[1])
        return "JPEG", Image.fromarray((sheet * 255).round().astype(np.uint8)), 768

    return render


def _photo_inputs() -> dict:
    """The checkpoint and the defect photos with their masks."""
    return {
        "model": ("MODEL", {"tooltip": "The plain SD1.5 checkpoint MODEL (no Dual LoRA on it)."}),
        "clip": ("CLIP", {"tooltip": "The same checkpoint's CLIP."}),
        "vae": ("VAE", {"tooltip": "The same checkpoint's VAE: encodes the photos once per flip."}),
        "images": ("IMAGE", {"tooltip": "Defect photos, e.g. from Load Defect Set."}),
        "masks": ("MASK", {"tooltip": "One defect mask per photo (white = defect)."}),
    }


def _training_inputs() -> dict:
    """The recipe: steps, learning rate, rank, batch, seed and what is trained."""
    return {
        "steps": (
            "INT",
            {
                "default": 5000,
                "min": 1,
                "max": 100000,
                "tooltip": "Optimiser steps to train now (the authors: 5000 in all).",
            },
        ),
        "learning_rate": (
            "FLOAT",
            {
                "default": 2e-5,
                "min": 1e-7,
                "max": 1e-2,
                "step": 1e-6,
                "round": 1e-7,
                "tooltip": "AdamW learning rate, constant (the authors: 2e-5).",
            },
        ),
        "rank": (
            "INT",
            {
                "default": 32,
                "min": 1,
                "max": 128,
                "tooltip": "LoRA rank of both branches and the text encoder (the authors: 32).",
            },
        ),
        "batch_size": (
            "INT",
            {
                "default": 4,
                "min": 1,
                "max": 64,
                "tooltip": "Pairs per step, drawn with replacement from the photos (the authors: 4).",
            },
        ),
        "seed": (
            "INT",
            {
                "default": 32,
                "min": 0,
                "max": 2**31 - 1,
                "tooltip": "Seed of the init and of "
                "every draw (batch, flips, timesteps, noise): same seed, same model.",
            },
        ),
        "bcm": (
            "BOOLEAN",
            {
                "default": False,
                "tooltip": "Train background compensation too (needs "
                "backgrounds; sample it with Background Compensation).",
            },
        ),
        "train_text_encoder": (
            "BOOLEAN",
            {"default": True, "tooltip": "Train the shared text-encoder LoRA (the authors do)."},
        ),
        "gradient_checkpointing": (
            "BOOLEAN",
            {
                "default": False,
                "tooltip": "Recompute activations in the backward pass: much less memory, about a third slower.",
            },
        ),
    }


def _optional_inputs() -> dict:
    """BCM backgrounds, size, flips, previews, autosaves and what to resume (the file list read at each call)."""
    return {
        "backgrounds": (
            "IMAGE",
            {"tooltip": "Object-blacked-out photos for BCM, one per photo (Load Defect Set with background on)."},
        ),
        "resolution": (
            "INT",
            {
                "default": 512,
                "min": 64,
                "max": 2048,
                "step": 8,
                "tooltip": "Training size; photos are stretched to it. Photos from Load "
                "Defect Set must have been made at this resolution (set both the same).",
            },
        ),
        "flips": (
            "BOOLEAN",
            {
                "default": True,
                "tooltip": "Random horizontal/vertical flips; off for "
                "orientation-sensitive objects (cable, transistor).",
            },
        ),
        "preview_every": (
            "INT",
            {
                "default": 500,
                "min": 0,
                "max": 100000,
                "tooltip": "Sample a preview pair on the progress bar every this many steps (0: never).",
            },
        ),
        "autosave_every": (
            "INT",
            {
                "default": 500,
                "min": 0,
                "max": 100000,
                "tooltip": "Write the weights "
                "and optimiser state to models/dualanodiff/autosave every this many steps "
                "and at the end (0: only on Cancel or an error, which always save). "
                "Pick the file as resume_file to continue exactly.",
            },
        ),
        "resume": (
            DUAL_WEIGHTS,
            {
                "tooltip": "Continue these weights (a previous Train Dual LoRA) with the "
                "same photos and seed: the result equals one longer run."
            },
        ),
        "resume_file": (
            resumable_files(),
            {
                "tooltip": "Or continue a file in models/dualanodiff saved with "
                "its optimiser state ('none': start afresh)."
            },
        ),
    }


class DualAnoDiffTrain:
    DESCRIPTION = (
        "Trains a DualAnoDiff model (a LoRA per branch, SAIM, optionally BCM, and the shared text-encoder LoRA) on a "
        "few defect photos with the same training step as `anodiff train`, on this MODEL/CLIP/VAE and the device "
        "ComfyUI chose. Returns MODEL and CLIP already carrying it (feed Dual Sampler), the weights for Save Dual "
        "LoRA, and the loss. Cancel stops after the current step and leaves the input MODEL and CLIP untouched; "
        "what was trained is autosaved every autosave_every steps and on Cancel or an error (resume_file "
        "continues it). "
        "The authors train 5000 steps, rank 32, lr 2e-5, batch 4 at 512 px."
    )
    CATEGORY = "DualAnoDiff/training"
    FUNCTION = "train"
    RETURN_TYPES = ("MODEL", "CLIP", DUAL_WEIGHTS, LOSS_MAP)
    RETURN_NAMES = ("model", "clip", "dual_weights", "loss")
    OUTPUT_TOOLTIPS = (
        "The input MODEL with the trained dual model, as Load Dual LoRA would give it.",
        "The input CLIP with the trained text-encoder LoRA.",
        "The trained weights (and optimiser state): Save Dual LoRA writes them; 'resume' continues them.",
        "Loss per step (this run and the runs it continues), for Loss Graph.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {**_photo_inputs(), **_training_inputs()}, "optional": _optional_inputs()}

    def train(
        self,
        model,
        clip,
        vae,
        images,
        masks,
        steps,
        learning_rate,
        rank,
        batch_size,
        seed,
        bcm,
        train_text_encoder,
        gradient_checkpointing,
        backgrounds=None,
        resolution=512,
        flips=True,
        preview_every=500,
        resume=None,
        resume_file=NONE,
        autosave_every=500,
    ):
        if bcm and (backgrounds is None or not bool(backgrounds.gt(0).any())):
            given = "no backgrounds are connected" if backgrounds is None else "the backgrounds are all black"
            raise ValueError(
                f"Train Dual LoRA: bcm is on but {given}; turn Load Defect Set's background switch on "
                "(it then gives one object-blacked-out photo per image), or turn bcm off"
            )
        start: TrainedDual | None = starting_point(resume, resume_file)
        prompts = start.dual.prompts if start is not None else (PROMPT_GLOBAL, PROMPT_ANOMALY)
        config = SessionConfig(
            rank=rank,
            text_rank=rank,
            lr=learning_rate,
            batch_size=batch_size,
            seed=seed,
            bcm=bcm,
            train_text_encoder=train_text_encoder,
            resolution=resolution,
            prompt_global=prompts[0],
            prompt_anomaly=prompts[1],
        )
        check_resolution(images, resolution)
        dataset = build_dataset(images, masks, backgrounds if bcm else None, resolution, flips, seed)
        options = RunOptions(steps, gradient_checkpointing, preview_every, autosave_every)
        result = run_training(model, clip, vae, dataset, config, options, start, preview_pair(vae, config, seed))
        new_model, new_clip = attach_dual(model, clip, result.dual, name="trained")
        return new_model, new_clip, result, {"loss": list(result.losses)}


NODE_CLASS_MAPPINGS = {"DualAnoDiffTrain": DualAnoDiffTrain}
NODE_DISPLAY_NAME_MAPPINGS = {"DualAnoDiffTrain": "Train Dual LoRA"}
