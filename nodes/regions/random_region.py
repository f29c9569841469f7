"""Random Defect Region: random masks on the object of a normal photo, to choose where a defect goes."""

from __future__ import annotations

import numpy as np
import torch

from ...anodiff.data import masks
from ...anodiff.regions import placement as regions
from ..dataset.inputs import mask_batch
from ..dataset.mask import load_u2netp

NAME = "Random Defect Region"
TOOLTIPS = {
    "image": "The normal photo (or a batch of them); regions are placed on its object, never on the background.",
    "count": "Regions per image. They are drawn independently and may overlap.",
    "min_size": "Smallest region side, sqrt(width x height), as a fraction of the image's shorter side.",
    "max_size": "Largest region side, as a fraction of the image's shorter side.",
    "min_aspect": "Smallest width / height; below 1 allows tall regions.",
    "max_aspect": "Largest width / height; above 1 allows wide regions.",
    "shape": "The region's shape: an axis-aligned ellipse or rectangle.",
    "seed": "The same seed gives the same regions; each image of a batch gets its own from (seed, index).",
    "erode": "Pixels to shrink the foreground by first, so regions keep at least this far from the object's edge.",
    "threshold": "Cut-off on the U²-Net-P saliency (0.5 as for anomaly masks); lower it when the object is faint. "
    "Unused when a foreground mask is given.",
    "feather": "Pixels over which the region masks fade out at their edge, inwards only; 0 gives hard masks.",
    "foreground": "Optional: the object's mask (one, or one per image). Given, U²-Net-P is skipped.",
}


def _foregrounds(images: np.ndarray, foreground: torch.Tensor | None, threshold: float, erode: int) -> np.ndarray:
    """``(B, H, W)`` bool: the given foreground (broadcast over the batch) or U²-Net-P's, eroded."""
    batch, height, width = images.shape[:3]
    if foreground is None:
        try:
            model = load_u2netp()
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"{NAME}: {err.__cause__ or err} Or connect a mask of the object to 'foreground', which needs no model."
            ) from err
        return np.stack([regions.foreground_mask(image, model, threshold, erode) for image in images])
    given = mask_batch(foreground)
    if given.ndim != 3 or given.shape[1:] != (height, width) or given.shape[0] not in (1, batch):
        raise ValueError(
            f"{NAME}: foreground must be a MASK of the image's size, (1 or {batch}, {height}, {width}), got "
            f"{tuple(foreground.shape)}; resize the mask or pass one per image"
        )
    eroded = [masks.grow_mask(m > 0.5, -erode) for m in given]
    return np.stack([eroded[b % len(eroded)] for b in range(batch)])


class DualAnoDiffRandomRegion:
    DESCRIPTION = (
        "Draws random ellipses or rectangles that lie wholly on the object of a normal photo, to control where a "
        "generated defect goes and keep it off the background. The object is found with U²-Net-P (u2netp.onnx, "
        "installed by the pack's install.py) unless a foreground mask is connected."
    )
    CATEGORY = "DualAnoDiff/mask"
    FUNCTION = "sample"
    RETURN_TYPES = ("MASK", "MASK", "IMAGE")
    RETURN_NAMES = ("regions", "foreground", "preview")
    OUTPUT_TOOLTIPS = (
        "The regions, count per image, image by image: (batch x count, H, W), 1 inside a region.",
        "Where regions may go: the object after erosion, one per image.",
        "The photo with each region tinted and the foreground outlined in green.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        def size(default: float) -> dict:
            return {"default": default, "min": 0.01, "max": 1.0, "step": 0.01}

        def aspect(default: float) -> dict:
            return {"default": default, "min": 0.05, "max": 20.0, "step": 0.05}

        return {
            "required": {
                "image": ("IMAGE", {"tooltip": TOOLTIPS["image"]}),
                "count": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": TOOLTIPS["count"]}),
                "min_size": ("FLOAT", {**size(0.05), "tooltip": TOOLTIPS["min_size"]}),
                "max_size": ("FLOAT", {**size(0.2), "tooltip": TOOLTIPS["max_size"]}),
                "min_aspect": ("FLOAT", {**aspect(0.5), "tooltip": TOOLTIPS["min_aspect"]}),
                "max_aspect": ("FLOAT", {**aspect(2.0), "tooltip": TOOLTIPS["max_aspect"]}),
                "shape": (list(regions.SHAPES), {"default": "ellipse", "tooltip": TOOLTIPS["shape"]}),
                "seed": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 0xFFFFFFFFFFFFFFFF,
                        "control_after_generate": True,
                        "tooltip": TOOLTIPS["seed"],
                    },
                ),
                "erode": ("INT", {"default": 0, "min": 0, "max": 512, "tooltip": TOOLTIPS["erode"]}),
                "threshold": (
                    "FLOAT",
                    {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": TOOLTIPS["threshold"]},
                ),
                "feather": ("INT", {"default": 0, "min": 0, "max": 256, "tooltip": TOOLTIPS["feather"]}),
            },
            "optional": {"foreground": ("MASK", {"tooltip": TOOLTIPS["foreground"]})},
        }

    def sample(
        self,
        image,
        count,
        min_size,
        max_size,
        min_aspect,
        max_aspect,
        shape,
        seed,
        erode,
        threshold,
        feather,
        foreground=None,
    ):
        if image.ndim != 4 or image.shape[-1] not in (3, 4):
            raise ValueError(f"{NAME}: image must be an IMAGE (B, H, W, 3), got {tuple(image.shape)}")
        for low, high, what in ((min_size, max_size, "size"), (min_aspect, max_aspect, "aspect")):
            if low > high:
                raise ValueError(f"{NAME}: min_{what} ({low:g}) is above max_{what} ({high:g}); swap them")
        images = image[..., :3].detach().to("cpu", torch.float32).numpy()
        fgs = _foregrounds(images, foreground, threshold, erode)
        found, previews = [], []
        for b, (photo, fg) in enumerate(zip(images, fgs, strict=True)):
            try:
                drawn = regions.sample_regions(
                    fg, count, (min_size, max_size), (min_aspect, max_aspect), shape, seed=(seed, b)
                )
            except ValueError as err:
                raise ValueError(f"{NAME}, image {b}: {err}") from err
            found += [regions.feather(r, feather) for r in drawn]
            previews.append(regions.preview(photo, fg, drawn))
        regions_out = torch.from_numpy(np.stack(found))
        return (regions_out, torch.from_numpy(fgs.astype(np.float32)), torch.from_numpy(np.stack(previews)))


NODE_CLASS_MAPPINGS = {"DualAnoDiffRandomRegion": DualAnoDiffRandomRegion}
NODE_DISPLAY_NAME_MAPPINGS = {"DualAnoDiffRandomRegion": NAME}
