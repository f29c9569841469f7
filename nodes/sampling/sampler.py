"""Dual Sampler (SAIM): samples N global/anomaly pairs as one interleaved batch of 2N latents."""

from __future__ import annotations

from .pairing import pair_conditioning, pair_latent, refuse_unpairable, split_pairs
from .stamps import mark_paired

__all__ = ["DualAnoDiffSampler", "pair_conditioning", "sample_latent", "sample_pairs"]
NAME = "Dual Sampler (SAIM)"

try:
    import comfy.samplers

    SAMPLERS, SCHEDULERS = comfy.samplers.KSampler.SAMPLERS, comfy.samplers.KSampler.SCHEDULERS
except ImportError:  # imported outside ComfyUI (docs, tests of the library)
    SAMPLERS, SCHEDULERS = ["euler"], ["normal"]


def sample_latent(
    model,
    positive,
    negative,
    latent: dict,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    denoise: float,
    preview: bool = True,
) -> dict:
    """KSampler's sampling (noise from ``batch_index``, noise_mask, preview) on a LATENT, returning a LATENT.

    preview=False: no latent previews and no progress bar (a sample inside another node's progress, e.g. training).
    """
    import comfy.sample
    import comfy.utils

    samples = latent["samples"]
    fix = getattr(comfy.sample, "fix_empty_latent_channels", None)
    if fix is not None:
        samples = fix(model, samples)
    noise = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
    callback = None
    if preview:
        try:
            import latent_preview

            callback = latent_preview.prepare_callback(model, steps)
        except ImportError:
            pass
    out = comfy.sample.sample(
        model,
        noise,
        steps,
        cfg,
        sampler_name,
        scheduler,
        positive,
        negative,
        samples,
        denoise=denoise,
        noise_mask=latent.get("noise_mask"),
        callback=callback,
        disable_pbar=not (preview and comfy.utils.PROGRESS_BAR_ENABLED),
        seed=seed,
    )
    return {**latent, "samples": out}


def sample_pairs(
    model,
    positive_global,
    positive_anomaly,
    negative,
    latent: dict,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    denoise: float,
    preview: bool = True,
) -> tuple[dict, dict, dict]:
    """Pair Latent + Pair Conditioning + KSampler + Split Pairs in one call: (global, anomaly, pairs)."""
    refuse_unpairable(negative, "negative")
    positive = pair_conditioning(positive_global, positive_anomaly)
    paired = pair_latent(latent, node=NAME)
    pairs = sample_latent(
        model, positive, negative, paired, seed, steps, cfg, sampler_name, scheduler, denoise, preview
    )
    mark_paired(pairs["samples"])  # sampled here from pairs (also by a MODEL without a Dual LoRA, to compare)
    glob, anomaly = split_pairs(pairs, node=NAME)
    return glob, anomaly, pairs


class DualAnoDiffSampler:
    DESCRIPTION = (
        "Samples N pairs at once: the whole defect image (global) and the defect alone on grey (anomaly), "
        "interleaved in one batch so SAIM aligns them. Use a MODEL from Load Dual LoRA."
    )
    CATEGORY = "DualAnoDiff/sampling"
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT", "LATENT", "LATENT")
    RETURN_NAMES = ("global", "anomaly", "pairs")
    OUTPUT_TOOLTIPS = (
        "Whole anomalous images (decode with the VAE). A plain latent: to refine both branches, use 'pairs'.",
        "Defect-only images on grey: feed Extract Anomaly Mask.",
        "Both branches interleaved (2N latents): upscale or refine them with any sampler, then Split Pairs.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (
                    "MODEL",
                    {"tooltip": "MODEL from Load Dual LoRA (optionally through Background Compensation)."},
                ),
                "positive_global": (
                    "CONDITIONING",
                    {"tooltip": "Prompt of the global branch, trained as 'a vfx with sks'."},
                ),
                "positive_anomaly": ("CONDITIONING", {"tooltip": "Prompt of the anomaly branch, trained as 'sks'."}),
                "negative": (
                    "CONDITIONING",
                    {
                        "tooltip": "Negative prompt, shared by both branches (an empty prompt as trained). "
                        "ControlNet/T2I-Adapter/GLIGEN conditioning is refused: it cannot follow the pairs."
                    },
                ),
                "latent_image": (
                    "LATENT",
                    {
                        "tooltip": "N latents (e.g. Empty Latent Image, batch N): N pairs are made. "
                        "Or pairs: Region Latent, a Dual Sampler's pairs (refine)."
                    },
                ),
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 0xFFFFFFFFFFFFFFFF,
                        "control_after_generate": True,
                        "tooltip": "Noise seed; every latent of every branch gets its own noise.",
                    },
                ),
                "steps": ("INT", {"default": 30, "min": 1, "max": 10000, "tooltip": "Denoising steps."}),
                "cfg": (
                    "FLOAT",
                    {
                        "default": 2.5,
                        "min": 0.0,
                        "max": 100.0,
                        "step": 0.1,
                        "round": 0.01,
                        "tooltip": "Classifier-free guidance (the authors used 2.5; 2.0 with BCM).",
                    },
                ),
                "sampler_name": (SAMPLERS, {"tooltip": "Any ComfyUI sampler."}),
                "scheduler": (SCHEDULERS, {"tooltip": "Any ComfyUI scheduler."}),
                "denoise": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "1.0 from pure noise; lower keeps more of latent_image.",
                    },
                ),
            }
        }

    def sample(
        self,
        model,
        positive_global,
        positive_anomaly,
        negative,
        latent_image,
        seed,
        steps,
        cfg,
        sampler_name,
        scheduler,
        denoise=1.0,
    ):
        return sample_pairs(
            model,
            positive_global,
            positive_anomaly,
            negative,
            latent_image,
            seed,
            steps,
            cfg,
            sampler_name,
            scheduler,
            denoise,
        )


NODE_CLASS_MAPPINGS = {"DualAnoDiffSampler": DualAnoDiffSampler}
NODE_DISPLAY_NAME_MAPPINGS = {"DualAnoDiffSampler": NAME}
