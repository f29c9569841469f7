"""One-Shot Defect (graft): a real defect grafted into a normal image without training (O2MAG, CVPR 2026)."""

from __future__ import annotations

import numpy as np

from ...anodiff.graft.config import NEGATIVE, GraftSettings
from ...anodiff.graft.inputs import TIGHTEN_THRESHOLD


def _mask(mask, i: int, name: str) -> np.ndarray:
    m = mask.detach().float().cpu().numpy()
    if m.ndim == 2:
        return m
    if m.ndim != 3 or m.shape[0] == 0:
        raise ValueError(f"{name}: expected a MASK (H, W) or (B, H, W), got shape {m.shape}")
    return m[i % m.shape[0]]


def _image_inputs() -> dict:
    """The checkpoint, the reference defect and the normal photos with their masks, and the prompt words."""
    t = "tooltip"
    return {
        "model": ("MODEL", {t: "A Stable Diffusion 1.5 checkpoint's MODEL (no LoRA needed)."}),
        "clip": (
            "CLIP",
            {t: "The same checkpoint's CLIP, for the prompts 'a photo of a <category> with a <defect>'."},
        ),
        "vae": ("VAE", {t: "The same checkpoint's VAE: encodes both images, decodes the result."}),
        "reference": ("IMAGE", {t: "The real defect photo (the first of a batch is used)."}),
        "reference_mask": (
            "MASK",
            {
                t: "White where the reference's defect is, same size as the reference "
                "(paint it in LoadImage's mask editor)."
            },
        ),
        "normal": ("IMAGE", {t: "Normal photo(s) to put the defect on; each image of a batch gets one."}),
        "target_mask": (
            "MASK",
            {t: "White where the defect goes, same size as the normal image (one per image, or one for all)."},
        ),
        "category": ("STRING", {"default": "object", t: "Product name used in the prompts."}),
        "defect": (
            "STRING",
            {
                "default": "defect",
                t: "Defect name used in the prompts; its words are emphasised inside the target mask.",
            },
        ),
    }


def _graft_inputs() -> dict:
    """Inversion, the embedding fit, the mask tightening and the paste."""
    t = "tooltip"
    return {
        "steps": (
            "INT",
            {"default": 50, "min": 2, "max": 200, t: "DDIM steps of inversion and sampling (O2MAG: 50)."},
        ),
        "cfg": ("FLOAT", {"default": 7.5, "min": 1.0, "max": 30.0, "step": 0.1, t: "Guidance (O2MAG: 7.5)."}),
        "optimise_steps": (
            "INT",
            {
                "default": 500,
                "min": 0,
                "max": 5000,
                t: "Adam steps fitting the prompt embedding to the reference, once per reference (cached); 0 skips it.",
            },
        ),
        "optimise_lr": (
            "FLOAT",
            {
                "default": 0.003,
                "min": 1e-5,
                "max": 0.1,
                "step": 0.0005,
                t: "Learning rate of that fit (O2MAG: 0.003).",
            },
        ),
        "seed": (
            "INT",
            {
                "default": 0,
                "min": 0,
                "max": 0xFFFFFFFF,
                t: "Seeds the embedding fit (all else is deterministic).",
            },
        ),
        "tighten": (
            "FLOAT",
            {
                "default": round(TIGHTEN_THRESHOLD, 4),
                "min": 0.0,
                "max": 1.0,
                "step": 0.005,
                t: "Mask = target AND max RGB change above this; 0 returns the target mask itself.",
            },
        ),
        "feather": (
            "INT",
            {"default": 4, "min": 0, "max": 64, t: "Soft edge, in pixels, of the paste into the normal image."},
        ),
    }


class DualAnoDiffOneShotDefect:
    DESCRIPTION = (
        "Training-free: grafts the defect of ONE real photo (reference IMAGE + MASK) into a normal IMAGE inside "
        "the target MASK (LoadImage and its mask editor work directly). Both images are DDIM-inverted; the target "
        "branch's self-attention reads the reference's defect inside the target mask. Any SD1.5 MODEL, no LoRA."
    )
    CATEGORY = "DualAnoDiff/sampling"
    FUNCTION = "graft"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "mask")
    OUTPUT_TOOLTIPS = (
        "The normal image with the grafted defect; outside the target mask (plus feather) it is the input.",
        "Where the image departs from the normal one inside the target mask (the target mask with tighten 0).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        t = "tooltip"
        return {
            "required": {**_image_inputs(), **_graft_inputs()},
            "optional": {
                "negative": (
                    "STRING",
                    {"default": NEGATIVE, "multiline": True, t: "The prompt guidance pushes away from (O2MAG's)."},
                ),
            },
        }

    def graft(
        self,
        model,
        clip,
        vae,
        reference,
        reference_mask,
        normal,
        target_mask,
        category,
        defect,
        steps,
        cfg,
        optimise_steps,
        optimise_lr,
        seed,
        tighten,
        feather,
        negative=NEGATIVE,
        **kwargs,
    ):
        import comfy.model_management as mm
        import comfy.utils
        import torch

        from .graft_run import graft_images

        settings = GraftSettings(
            steps=int(steps),
            cfg=float(cfg),
            optimise_steps=int(optimise_steps),
            optimise_lr=float(optimise_lr),
            negative=negative,
        )
        count = normal.shape[0]
        bar = comfy.utils.ProgressBar(count * (3 * settings.steps) + settings.optimise_steps)

        def tick() -> None:
            mm.throw_exception_if_processing_interrupted()
            bar.update(1)

        ref = reference[0].detach().float().cpu().numpy()[..., :3]
        ref_mask = _mask(reference_mask, 0, "reference_mask")
        images, masks = [], []
        for i in range(count):
            image, mask = graft_images(
                model,
                clip,
                vae,
                ref,
                ref_mask,
                normal[i].detach().float().cpu().numpy()[..., :3],
                _mask(target_mask, i, "target_mask"),
                category,
                defect,
                settings,
                int(seed),
                float(tighten) if tighten > 0 else None,
                int(feather),
                tick,
            )
            images.append(torch.from_numpy(image))
            masks.append(torch.from_numpy(mask.astype(np.float32)))
        return torch.stack(images), torch.stack(masks)


NODE_CLASS_MAPPINGS = {"DualAnoDiffOneShotDefect": DualAnoDiffOneShotDefect}
NODE_DISPLAY_NAME_MAPPINGS = {"DualAnoDiffOneShotDefect": "One-Shot Defect (graft, no training)"}
