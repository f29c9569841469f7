"""Region control: the defect only inside a region of a real photo, the rest of the photo untouched.

Region Latent makes a paired LATENT whose global rows start from the photo and whose anomaly rows start from the
grey canvas, with the region as ``noise_mask``: ComfyUI's samplers then re-noise those latents to the current sigma
outside the region at every step (the inpainting mechanism), so both branches are held to the region. Composite
Region pastes the decoded region back into the photo in pixel space and clips the mask to it.
"""

from __future__ import annotations

import numpy as np
import torch

from ...anodiff.regions.composite import clip_mask, composite
from ..sampling.pairing import pair_latent


def _per_image(mask: torch.Tensor, count: int, what: str) -> torch.Tensor:
    if mask.dim() == 2:
        mask = mask[None]
    if mask.shape[0] not in (1, count):
        raise ValueError(f"{what}: {mask.shape[0]} masks for {count} images; give one, or one per image")
    return mask.expand(count, -1, -1) if mask.shape[0] == 1 else mask


class DualAnoDiffRegionLatent:
    DESCRIPTION = (
        "Starts the Dual Sampler from a normal photo: the defect is drawn only inside the region; outside it both "
        "branches are held to the photo (global) and the grey canvas (anomaly). Decode, then use Composite Region."
    )
    CATEGORY = "DualAnoDiff/region"
    FUNCTION = "make"
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("Pairs (photo, grey canvas): into the Dual Sampler, or any sampler with Pair Conditioning.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "vae": ("VAE", {"tooltip": "The checkpoint's VAE."}),
                "source": ("IMAGE", {"tooltip": "The normal photo(s) to put a defect into; sides multiples of 8."}),
                "region": ("MASK", {"tooltip": "Where the defect may go (white), e.g. from Random Defect Region."}),
                "batch_size": (
                    "INT",
                    {"default": 1, "min": 1, "max": 64, "tooltip": "Pairs per photo when one photo is given."},
                ),
            }
        }

    def make(self, vae, source, region, batch_size=1):
        images = source[..., :3]
        if images.shape[1] % 8 or images.shape[2] % 8:
            raise ValueError(
                f"Region Latent: the photo is {images.shape[2]}x{images.shape[1]}; resize it to multiples of 8"
            )
        if images.shape[0] == 1 and batch_size > 1:
            images = images.expand(batch_size, -1, -1, -1)
        masks = _per_image(region, images.shape[0], "Region Latent")
        if masks.shape[-2:] != images.shape[1:3]:
            raise ValueError(
                f"Region Latent: region {tuple(masks.shape[-2:])} and photo {tuple(images.shape[1:3])} differ in size"
            )
        photo = vae.encode(images)
        grey = vae.encode(torch.full_like(images[:1], 0.5)).expand_as(photo)
        latent = {"samples": photo, "noise_mask": masks.float()}
        return (pair_latent(latent, {"samples": grey.contiguous()}, node="Region Latent"),)


class DualAnoDiffCompositeRegion:
    DESCRIPTION = (
        "Pastes the generated region into the source photo with a feathered edge: outside the region (grown by "
        "the feather) the result is the photo, pixel for pixel. The mask is clipped to the region."
    )
    CATEGORY = "DualAnoDiff/region"
    FUNCTION = "paste"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "mask")
    OUTPUT_TOOLTIPS = ("The photo with the generated defect.", "The defect mask, inside the region only.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "generated": ("IMAGE", {"tooltip": "Decoded global images from the Dual Sampler."}),
                "source": ("IMAGE", {"tooltip": "The same photo(s) given to Region Latent."}),
                "region": ("MASK", {"tooltip": "The same region given to Region Latent."}),
                "feather": (
                    "INT",
                    {"default": 4, "min": 0, "max": 64, "tooltip": "Soft edge width in pixels, outside the region."},
                ),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "Defect mask from Extract Anomaly Mask, clipped to the region."}),
            },
        }

    def paste(self, generated, source, region, feather, mask=None):
        count = generated.shape[0]
        if source.shape[0] not in (1, count):
            raise ValueError(
                f"Composite Region: source has {source.shape[0]} photos for {count} generated images; "
                "give one photo, or one per generated image (decode the Dual Sampler's global output, "
                "not its pairs output)"
            )
        sources = source[..., :3] if source.shape[0] == count else source[..., :3].expand(count, -1, -1, -1)
        regions = _per_image(region, count, "Composite Region")
        out = [
            torch.from_numpy(
                composite(g.detach().cpu().numpy(), s.detach().cpu().numpy(), r.detach().cpu().numpy(), feather)
            )
            for g, s, r in zip(generated, sources, regions)
        ]
        if mask is None:
            clipped = regions.gt(0.5).float()
        else:
            masks = _per_image(mask, count, "Composite Region mask")
            clipped = torch.stack(
                [
                    torch.from_numpy(clip_mask(m.detach().cpu().numpy(), r.detach().cpu().numpy()).astype(np.float32))
                    for m, r in zip(masks, regions)
                ]
            )
        return torch.stack(out).to(generated), clipped.to(generated)


NODE_CLASS_MAPPINGS = {
    "DualAnoDiffRegionLatent": DualAnoDiffRegionLatent,
    "DualAnoDiffCompositeRegion": DualAnoDiffCompositeRegion,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DualAnoDiffRegionLatent": "Region Latent",
    "DualAnoDiffCompositeRegion": "Composite Region",
}
