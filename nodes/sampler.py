"""Dual Sampler (SAIM): samples N global/anomaly pairs as one interleaved batch of 2N latents."""

from __future__ import annotations

import math

import torch

from ..anodiff.pairs import interleave, split
from .region_control import ANOMALY_SAMPLES

try:
    import comfy.samplers

    SAMPLERS, SCHEDULERS = comfy.samplers.KSampler.SAMPLERS, comfy.samplers.KSampler.SCHEDULERS
except ImportError:  # imported outside ComfyUI (docs, tests of the library)
    SAMPLERS, SCHEDULERS = ["euler"], ["normal"]


def _repeat_tokens(t: torch.Tensor, length: int) -> torch.Tensor:
    return t.repeat(1, length // t.shape[1], 1)


def pair_conditioning(positive_global: list, positive_anomaly: list) -> list:
    """One CONDITIONING whose tensors have batch 2 ``[global; anomaly]``.

    ComfyUI tiles a cond to the latent batch (``repeat_to_batch_size``), so rows [g, a, g, a, ...] get the
    global and the anomaly prompt in turn, matching the interleaved latents. Prompts of different lengths
    (77 vs 154 tokens) are repeated to a common length, as ComfyUI does when it batches conds.
    """
    if len(positive_global) != len(positive_anomaly):
        raise ValueError(
            f"positive_global has {len(positive_global)} conditioning entries and positive_anomaly "
            f"{len(positive_anomaly)}; connect one CLIP Text Encode to each"
        )
    paired = []
    for (g, g_opts), (a, a_opts) in zip(positive_global, positive_anomaly):
        if g.shape[0] != 1 or a.shape[0] != 1:
            raise ValueError("each positive prompt must be a single conditioning (batch 1), not a batch")
        length = math.lcm(g.shape[1], a.shape[1])
        options = dict(g_opts)
        pooled_g, pooled_a = g_opts.get("pooled_output"), a_opts.get("pooled_output")
        if pooled_g is not None and pooled_a is not None:
            options["pooled_output"] = torch.cat([pooled_g, pooled_a])
        paired.append([torch.cat([_repeat_tokens(g, length), _repeat_tokens(a, length)]), options])
    return paired


def sample_pairs(model, positive_global, positive_anomaly, negative, latent: dict, seed: int, steps: int, cfg: float,
                 sampler_name: str, scheduler: str, denoise: float) -> tuple[dict, dict]:  # fmt: skip
    import comfy.sample
    import comfy.utils

    samples = latent["samples"]
    pairs = interleave(samples, latent.get(ANOMALY_SAMPLES, samples))
    batch_index = latent.get("batch_index")
    noise = comfy.sample.prepare_noise(pairs, seed, None if batch_index is None else [i for i in batch_index for _ in "ga"])
    mask = latent.get("noise_mask")
    if mask is not None and mask.shape[0] == samples.shape[0]:
        mask = interleave(mask, mask)
    try:
        import latent_preview

        callback = latent_preview.prepare_callback(model, steps)
    except ImportError:
        callback = None
    out = comfy.sample.sample(
        model, noise, steps, cfg, sampler_name, scheduler, pair_conditioning(positive_global, positive_anomaly),
        negative, pairs, denoise=denoise, noise_mask=mask, callback=callback,
        disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=seed,
    )  # fmt: skip
    glob, anomaly = split(out)
    plain = {k: v for k, v in latent.items() if k not in ("samples", ANOMALY_SAMPLES)}
    return {**plain, "samples": glob}, {**plain, "samples": anomaly}


class DualAnoDiffSampler:
    DESCRIPTION = (
        "Samples N pairs at once: the whole defect image (global) and the defect alone on grey (anomaly), "
        "interleaved in one batch so SAIM aligns them. Use a MODEL from Load Dual LoRA."
    )
    CATEGORY = "DualAnoDiff/sampling"
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT", "LATENT")
    RETURN_NAMES = ("global", "anomaly")
    OUTPUT_TOOLTIPS = ("Whole anomalous images (decode with the VAE).", "Defect-only images on grey: feed Extract Anomaly Mask.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "MODEL from Load Dual LoRA (optionally through Background Compensation)."}),
                "positive_global": ("CONDITIONING", {"tooltip": "Prompt of the global branch, trained as 'a vfx with sks'."}),
                "positive_anomaly": ("CONDITIONING", {"tooltip": "Prompt of the anomaly branch, trained as 'sks'."}),
                "negative": ("CONDITIONING", {"tooltip": "Negative prompt, shared by both branches (an empty prompt as trained)."}),
                "latent_image": ("LATENT", {"tooltip": "N latents (e.g. Empty Latent Image, batch N): N pairs are made."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                                 "tooltip": "Noise seed; every latent of every branch gets its own noise."}),
                "steps": ("INT", {"default": 30, "min": 1, "max": 10000, "tooltip": "Denoising steps."}),
                "cfg": ("FLOAT", {"default": 2.5, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01,
                                  "tooltip": "Classifier-free guidance (the authors used 2.5; 2.0 with BCM)."}),
                "sampler_name": (SAMPLERS, {"tooltip": "Any ComfyUI sampler."}),
                "scheduler": (SCHEDULERS, {"tooltip": "Any ComfyUI scheduler."}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                      "tooltip": "1.0 from pure noise; lower keeps more of latent_image."}),
            }
        }  # fmt: skip

    def sample(self, model, positive_global, positive_anomaly, negative, latent_image, seed, steps, cfg,
               sampler_name, scheduler, denoise=1.0):  # fmt: skip
        return sample_pairs(model, positive_global, positive_anomaly, negative, latent_image, seed, steps, cfg,
                            sampler_name, scheduler, denoise)  # fmt: skip


NODE_CLASS_MAPPINGS = {"DualAnoDiffSampler": DualAnoDiffSampler}
NODE_DISPLAY_NAME_MAPPINGS = {"DualAnoDiffSampler": "Dual Sampler (SAIM)"}
