"""Pair Latent, Pair Conditioning and Split Pairs: the Dual Sampler taken apart, so any ComfyUI sampler
(KSampler, KSamplerAdvanced, SamplerCustomAdvanced with any guider or sigmas) samples the pairs."""

from __future__ import annotations

from .pairing import pair_conditioning, pair_latent, split_pairs


class DualAnoDiffPairLatent:
    DESCRIPTION = (
        "Makes the 2N-latent batch a dual MODEL samples: each latent becomes a pair of rows, global then anomaly, "
        "each with its own noise. A latent that is already paired passes unchanged (second passes). To edit both "
        "branches with core latent nodes (upscale, flip...), split the pairs, edit both outputs the same way and "
        "pair them again here with 'anomaly'."
    )
    CATEGORY = "DualAnoDiff/sampling"
    FUNCTION = "pair"
    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("pairs",)
    OUTPUT_TOOLTIPS = ("2N latents [g0, a0, g1, a1, ...]: feed any sampler with Pair Conditioning, then Split Pairs.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "latent": (
                    "LATENT",
                    {
                        "tooltip": "N latents (Empty Latent Image, a photo's latent) for the global "
                        "rows, or a paired LATENT (Region Latent, a sampler's pairs)."
                    },
                ),
            },
            "optional": {
                "anomaly": (
                    "LATENT",
                    {
                        "tooltip": "N latents for the anomaly rows (e.g. Split Pairs' anomaly output, "
                        "edited like 'latent'); unconnected: a copy of 'latent'."
                    },
                ),
            },
        }

    def pair(self, latent, anomaly=None):
        return (pair_latent(latent, anomaly),)


class DualAnoDiffPairConditioning:
    DESCRIPTION = (
        "One positive CONDITIONING for the paired batch: rows alternate the global and the anomaly prompt. "
        "Connect it to the sampler's positive; the negative stays a plain prompt."
    )
    CATEGORY = "DualAnoDiff/sampling"
    FUNCTION = "pair"
    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("Positive conditioning for a sampler fed by Pair Latent.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "positive_global": (
                    "CONDITIONING",
                    {"tooltip": "Prompt of the global branch, trained as 'a vfx with sks'."},
                ),
                "positive_anomaly": ("CONDITIONING", {"tooltip": "Prompt of the anomaly branch, trained as 'sks'."}),
            }
        }

    def pair(self, positive_global, positive_anomaly):
        return (pair_conditioning(positive_global, positive_anomaly),)


class DualAnoDiffSplitPairs:
    DESCRIPTION = "Splits a paired 2N LATENT from any sampler into the global and the anomaly latents."
    CATEGORY = "DualAnoDiff/sampling"
    FUNCTION = "split"
    RETURN_TYPES = ("LATENT", "LATENT")
    RETURN_NAMES = ("global", "anomaly")
    OUTPUT_TOOLTIPS = (
        "Whole anomalous images (decode with the VAE).",
        "Defect-only images on grey: feed Extract Anomaly Mask.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"pairs": ("LATENT", {"tooltip": "The sampled output of a sampler fed by Pair Latent."})}}

    def split(self, pairs):
        return split_pairs(pairs)


NODE_CLASS_MAPPINGS = {
    "DualAnoDiffPairLatent": DualAnoDiffPairLatent,
    "DualAnoDiffPairConditioning": DualAnoDiffPairConditioning,
    "DualAnoDiffSplitPairs": DualAnoDiffSplitPairs,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DualAnoDiffPairLatent": "Pair Latent",
    "DualAnoDiffPairConditioning": "Pair Conditioning",
    "DualAnoDiffSplitPairs": "Split Pairs",
}
