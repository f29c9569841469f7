"""Crop Region / Stitch Region: region control on photos of any size, as inpaint crop-and-stitch packs do it.

Crop Region cuts a context window around the region (snapped to 64 px, clamped to the photo) and resizes it to the
working size, keeping its aspect; generate there with Region Latent + Dual Sampler, decode, then Stitch Region
pastes the result back at the photo's full resolution: outside the region grown by the feather the photo is kept
pixel for pixel, and the defect mask comes back at full size, clipped to the region. The math is anodiff.regions.stitch.
"""

from __future__ import annotations

import numpy as np
import torch

from ...anodiff.regions.multi_defect import check_disjoint
from ...anodiff.regions.stitch import BLENDS, Window, crop, shared_windows, stitch
from ..dataset.inputs import mask_batch

STITCH = "DUALANODIFF_STITCH"


class DualAnoDiffCropRegion:
    DESCRIPTION = (
        "Cuts the part of a large photo around a region and resizes it to the model's working size (keeping the "
        "aspect), so SD1.5 works near 512 px whatever the photo's size. Feed 'image' and 'region' to Region Latent; "
        "after decoding, Stitch Region puts the result back at full resolution."
    )
    CATEGORY = "DualAnoDiff/region"
    FUNCTION = "crop"
    RETURN_TYPES = ("IMAGE", "MASK", STITCH)
    RETURN_NAMES = ("image", "region", "stitch")
    OUTPUT_TOOLTIPS = (
        "The window around the region at the working size.",
        "The region inside that window, at the working size.",
        "Where the window came from: connect to Stitch Region.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": (
                    "IMAGE",
                    {"tooltip": "The normal photo, any size and aspect (or a batch of same-size photos)."},
                ),
                "region": (
                    "MASK",
                    {
                        "tooltip": "Where the defect may go (white), at the photo's size: one, one per "
                        "photo, or several defect regions to pick from with region_index."
                    },
                ),
                "context": (
                    "FLOAT",
                    {
                        "default": 2.0,
                        "min": 1.0,
                        "max": 16.0,
                        "step": 0.1,
                        "tooltip": "Window width and height as a multiple of the region box's, each "
                        "axis on its own (a long scratch gets a long window); larger shows "
                        "the model more of the part around the defect.",
                    },
                ),
                "working_size": (
                    "INT",
                    {
                        "default": 512,
                        "min": 64,
                        "max": 2048,
                        "step": 8,
                        "tooltip": "The window's longer side when generating (SD1.5: 512); a thin or "
                        "tiny region may get up to 3x this so its defect stays at least "
                        "4 latent pixels across; the shorter side is at least half.",
                    },
                ),
                "region_index": (
                    "INT",
                    {
                        "default": -1,
                        "min": -1,
                        "max": 255,
                        "tooltip": "-1: region k for photo k. 0, 1, ...: take that region of the "
                        "batch (several defects on one part); the regions must not overlap "
                        "nor come within Stitch Region's feather of one another.",
                    },
                ),
            }
        }

    def crop(self, image, region, context, working_size, region_index=-1):
        photos = image[..., :3].detach().to("cpu", torch.float32).numpy()
        masks = batch = mask_batch(region)
        if masks.shape[1:] != photos.shape[1:3]:
            raise ValueError(
                f"Crop Region: region {masks.shape[1:]} and photo {photos.shape[1:3]} differ in size; "
                "draw the region on the photo itself"
            )
        if region_index >= 0:
            if region_index >= len(masks):
                raise ValueError(f"Crop Region: region_index {region_index}, but the region batch holds {len(masks)}")
            try:
                check_disjoint(list(masks))
            except ValueError as err:
                raise ValueError(f"Crop Region: {err} (try another seed)") from err
            masks = masks[region_index : region_index + 1]  # Stitch Region checks the batch again with its feather
        if len(masks) not in (1, len(photos)):
            raise ValueError(
                f"Crop Region: {len(masks)} regions for {len(photos)} photos; give one, one per photo, "
                "or pick one with region_index"
            )
        chosen = [masks[k % len(masks)] for k in range(len(photos))]
        windows = shared_windows(
            chosen, float(context), int(working_size), [f"Crop Region: photo {k}" for k in range(len(photos))]
        )
        crops, zones = [], []
        for photo, zone, window in zip(photos, chosen, windows):
            piece, small = crop(photo, zone, window)
            crops.append(piece)
            zones.append(small)
        info = {
            "windows": windows,
            "photos": image[..., :3].detach().cpu(),
            "regions": torch.from_numpy(np.stack([masks[k % len(masks)] for k in range(len(photos))])),
            "batch": torch.from_numpy(batch) if region_index >= 0 else None,
        }
        out = torch.from_numpy(np.stack(crops)).to(image)
        return out, torch.from_numpy(np.stack(zones).astype(np.float32)).to(image), info


class DualAnoDiffStitchRegion:
    DESCRIPTION = (
        "Pastes generated windows back into the full-size photo from Crop Region: feathered (or Poisson-blended) "
        "inside the region grown by the feather, the photo's own pixels everywhere else. The mask comes back at "
        "the photo's size, clipped to the region."
    )
    CATEGORY = "DualAnoDiff/region"
    FUNCTION = "stitch"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "mask")
    OUTPUT_TOOLTIPS = ("The full-size photo with the defect.", "The defect mask at full size, inside the region.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Decoded global images of the window (Dual Sampler -> VAE Decode)."}),
                "stitch": (STITCH, {"tooltip": "From the Crop Region that made the window."}),
                "feather": (
                    "INT",
                    {
                        "default": 4,
                        "min": 0,
                        "max": 256,
                        "tooltip": "Soft edge in full-size pixels, outside the region. Regions picked "
                        "from one batch (region_index) closer than this are refused.",
                    },
                ),
                "blend": (
                    list(BLENDS),
                    {
                        "default": "feather",
                        "tooltip": "feather: soft edge; poisson: OpenCV seamless cloning (matches "
                        "lighting), still only inside the grown region.",
                    },
                ),
            },
            "optional": {
                "mask": (
                    "MASK",
                    {
                        "tooltip": "Defect mask at the working size (Extract Anomaly Mask); without it the "
                        "region is returned."
                    },
                ),
            },
        }

    def stitch(self, image, stitch, feather, blend, mask=None):
        windows, photos, regions = stitch["windows"], stitch["photos"], stitch["regions"]
        if stitch.get("batch") is not None:  # one of several defect regions: the grown paste must miss the others
            try:
                check_disjoint(list(stitch["batch"].numpy()), int(feather))
            except ValueError as err:
                raise ValueError(
                    f"Stitch Region: {err} (the paste reaches {int(feather)} px beyond its region and "
                    "would change the other defect; lower feather or try another seed)"
                ) from err
        count = image.shape[0]
        if len(windows) not in (1, count):
            raise ValueError(f"Stitch Region: {count} images for {len(windows)} cropped photos; give one per photo")
        generated = image[..., :3].detach().to("cpu", torch.float32).numpy()
        masks = None if mask is None else mask_batch(mask)
        if masks is not None and len(masks) not in (1, count):
            raise ValueError(f"Stitch Region: {len(masks)} masks for {count} images; give one per image")
        out, full = [], []
        for b in range(count):
            k = b % len(windows)
            m = None if masks is None else masks[b % len(masks)]
            if m is not None and m.shape != windows[k].work_shape:
                raise ValueError(f"Stitch Region: mask {m.shape} is not the window's size {windows[k].work_shape}")
            pasted, defect = stitch_one(
                photos[k].numpy(), generated[b], regions[k].numpy(), windows[k], m, feather, blend
            )
            out.append(torch.from_numpy(pasted))
            full.append(torch.from_numpy(defect.astype(np.float32)))
        return torch.stack(out).to(image), torch.stack(full).to(image)


def stitch_one(
    photo: np.ndarray,
    generated: np.ndarray,
    region: np.ndarray,
    window: Window,
    mask: np.ndarray | None,
    feather: int,
    blend: str,
) -> tuple[np.ndarray, np.ndarray]:
    """One window pasted back; the photo's float values are kept exactly outside the grown region."""
    if generated.shape[:2] != window.work_shape:
        raise ValueError(
            f"Stitch Region: image {generated.shape[:2]} is not the window's size {window.work_shape}; "
            "decode the latent made from Crop Region's image"
        )
    return stitch(photo, generated, region, window, mask=mask, feather=int(feather), blend=blend)


NODE_CLASS_MAPPINGS = {
    "DualAnoDiffCropRegion": DualAnoDiffCropRegion,
    "DualAnoDiffStitchRegion": DualAnoDiffStitchRegion,
}
NODE_DISPLAY_NAME_MAPPINGS = {"DualAnoDiffCropRegion": "Crop Region", "DualAnoDiffStitchRegion": "Stitch Region"}
