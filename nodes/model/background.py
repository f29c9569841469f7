"""Background Compensation: BCM on a MODEL from Load Dual LoRA, fed by a normal (defect-free) image."""

from __future__ import annotations

import numpy as np
import torch

from ...anodiff.data.objects import blackened_background
from .bcm_patch import BCMPatch, apply_bcm
from .patch import find_dual


def object_saliency(image: torch.Tensor) -> torch.Tensor:
    """(B, H, W) soft object mask from U²-Net-P, as the authors' backgrounds use (no threshold)."""
    from ..dataset.mask import load_u2netp

    try:
        model = load_u2netp()
    except FileNotFoundError as exc:
        raise FileNotFoundError(
            "Background Compensation: finding the object needs u2netp.onnx (run the pack's install.py or "
            "`anodiff fetch-models`), or connect an object_mask"
        ) from exc
    maps = [torch.from_numpy(model.saliency(img.cpu().numpy())) for img in image[..., :3]]
    return torch.stack(maps).to(image)


def blacken_object(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Object pixels go to black with soft edges, ``anodiff.data.objects.blackened_background`` per image.

    image (B, H, W, 3); mask (B|1, h, w) or (h, w), resized to the image. Returns (B, H, W, 3) like ``image``.
    """
    if mask.dim() == 2:
        mask = mask[None]
    if mask.shape[-2:] != image.shape[1:3]:
        mask = torch.nn.functional.interpolate(mask[:, None], size=image.shape[1:3], mode="bilinear")[:, 0]
    if mask.shape[0] not in (1, image.shape[0]):
        raise ValueError(f"object_mask has {mask.shape[0]} masks for {image.shape[0]} background images")
    photos = image[..., :3].detach().float().cpu().numpy()
    alphas = mask.detach().float().cpu().numpy()
    blacked = [blackened_background(photo, alphas[i % len(alphas)]) for i, photo in enumerate(photos)]
    return torch.from_numpy(np.stack(blacked)).to(image)


class DualAnoDiffBackgroundCompensation:
    DESCRIPTION = (
        "Background compensation (BCM): a defect-free photo, with the object blacked out, is run through the "
        "UNet at every step and its self-attention tokens are mixed into the global branch, so the generated "
        "image keeps that background. Needs a Dual LoRA trained with BCM."
    )
    CATEGORY = "DualAnoDiff/loaders"
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The dual MODEL with background compensation; feed it to Dual Sampler (SAIM).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "MODEL from Load Dual LoRA with a BCM-trained file."}),
                "vae": ("VAE", {"tooltip": "The checkpoint's VAE, to encode the background."}),
                "background": (
                    "IMAGE",
                    {"tooltip": "A normal (defect-free) photo of the product; one, or one per latent."},
                ),
                "strength": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": 0.0,
                        "max": 2.0,
                        "step": 0.05,
                        "tooltip": "Scales the learned mixing weight; 0 turns BCM off, 1 is as trained.",
                    },
                ),
            },
            "optional": {
                "object_mask": (
                    "MASK",
                    {"tooltip": "Where the object is (white). Without it, U²-Net-P segments the object."},
                ),
            },
        }

    def apply(self, model, vae, background, strength, object_mask=None):
        dual = find_dual(model)
        if dual is None:
            raise ValueError(
                "Background Compensation needs the MODEL output of Load Dual LoRA; connect it after the loader"
            )
        if dual.config.bcm is False:
            raise ValueError(
                f"'{dual.name}' has no BCM weights (trained without background compensation); remove Background "
                "Compensation or load a model trained with BCM"
            )
        if object_mask is not None and not bool(object_mask.gt(0.5).any()):
            raise ValueError(
                "Background Compensation: object_mask is empty (all black), so nothing would be blacked out. "
                "Connect a mask where the object is white (LoadImage's MASK is the alpha channel, empty for "
                "opaque photos), or leave object_mask unconnected to find the object with U²-Net-P"
            )
        mask = object_saliency(background) if object_mask is None else object_mask.to(background)
        blacked = blacken_object(background, mask)
        latent = vae.encode(blacked)
        grey = vae.encode(torch.full_like(blacked[:1], 0.5))
        return (apply_bcm(model, BCMPatch(dual, latent, grey, strength)),)


NODE_CLASS_MAPPINGS = {"DualAnoDiffBackgroundCompensation": DualAnoDiffBackgroundCompensation}
NODE_DISPLAY_NAME_MAPPINGS = {"DualAnoDiffBackgroundCompensation": "Background Compensation"}
