"""Load Defect Set: the few-shot training pairs as IMAGE/MASK batches, under ``anodiff train``'s rules."""

from __future__ import annotations

from pathlib import Path

import torch

from ...anodiff.common.imageio import folder_stamp
from ...anodiff.data import fewshot
from ...anodiff.data.layouts import detect_layout
from ..regions.sources import input_folder
from .train_inputs import mark_resolution
from .train_run import as_image_batch, build_dataset


def resolve_folder(folder: str) -> str:
    path = input_folder(folder, "Load Defect Set", "give a dataset folder, or connect images and masks")
    if not path.is_dir():
        raise ValueError(f"Load Defect Set: folder {path} does not exist")
    return str(path)


def folder_dataset(folder: str, category: str, anomaly: str, split: str, resolution: int, background: bool):
    """The training split of a dataset folder, as ``anodiff train --data`` reads it; and a one-line report."""
    from ..dataset.mask import load_u2netp

    root = resolve_folder(folder)
    try:
        samples = fewshot.split_train(fewshot.find_samples(root, category or None, anomaly or None), split)
        fewshot.validate_samples(samples)
    except (ValueError, FileNotFoundError) as err:  # the library's words for folder/category/anomaly
        raise type(err)(f"Load Defect Set: {err}") from err
    try:
        model = load_u2netp() if background else None
    except FileNotFoundError as err:
        raise FileNotFoundError(f"Load Defect Set: background needs U2-Net-P ({err})") from err
    dataset = fewshot.FewShotDataset(samples, resolution=resolution, flips=False, background=background, model=model)
    return dataset, f"{detect_layout(root).name} layout: {len(samples)} training pairs ({split} split) from {root}"


def memory_dataset(images: torch.Tensor, masks: torch.Tensor, resolution: int, background: bool):
    backgrounds = None
    if background:
        from ..model.background import blacken_object, object_saliency

        backgrounds = blacken_object(images, object_saliency(images))
    dataset = build_dataset(images, masks, backgrounds, resolution, flips=False, seed=0)
    return dataset, f"{len(dataset)} training pairs from the connected images and masks"


class DualAnoDiffLoadTrainingSet:
    DESCRIPTION = (
        "The few defect photos and their masks to train a dual model on, resized to the training resolution: from a "
        "dataset folder (MVTec AD/MPDD category + anomaly type, BTAD, VisA, or a folder with images/ and masks/), "
        "split and checked exactly as `anodiff train`, or from any IMAGE + MASK (Load Image, a mask editor). With "
        "background on, it also gives each photo with its object blacked out (U2-Net-P), for BCM."
    )
    CATEGORY = "DualAnoDiff/training"
    FUNCTION = "load"
    RETURN_TYPES = ("IMAGE", "MASK", "IMAGE", "STRING")
    RETURN_NAMES = ("images", "masks", "backgrounds", "report")
    OUTPUT_TOOLTIPS = (
        "The training photos (R x R).",
        "Their defect masks, binarised at half brightness as in training.",
        "The photos with the object blacked out (BCM); empty when background is off.",
        "Which layout was read and how many pairs train.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "folder": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "Dataset folder, relative to ComfyUI's input folder "
                        "(or absolute: inside input/ or output/, or listed in user/dualanodiff.yaml). "
                        "Ignored when images and masks are connected.",
                    },
                ),
                "category": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "Category of a multi-category dataset, e.g. bottle "
                        "(empty for a folder with images/ and masks/).",
                    },
                ),
                "anomaly": (
                    "STRING",
                    {"default": "", "tooltip": "Anomaly type, e.g. broken_large (MVTec test/<type>)."},
                ),
                "split": (
                    ["floor", "authors"],
                    {
                        "tooltip": "Which images train: floor = the first floor(n/3) "
                        "in name order (the rest held out for evaluation), authors = the official trainer's count "
                        "(floor(n/3), +1 unless divisible by 3)."
                    },
                ),
                "resolution": (
                    "INT",
                    {
                        "default": 512,
                        "min": 64,
                        "max": 2048,
                        "step": 8,
                        "tooltip": "Training size in pixels (512 for SD1.5); images are stretched to it.",
                    },
                ),
                "background": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "Also make the object-blacked-out backgrounds BCM trains on (needs u2netp.onnx).",
                    },
                ),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "Defect photos from any node, instead of a folder."}),
                "masks": ("MASK", {"tooltip": "One defect mask per connected image (white = defect)."}),
            },
        }

    @classmethod
    def IS_CHANGED(cls, folder="", **_):
        """Re-read the folder when a file in it is added, removed or rewritten (ComfyUI caches on the inputs)."""
        try:
            return folder_stamp(Path(resolve_folder(folder)))
        except (ValueError, ImportError):
            return ""

    def load(self, folder, category, anomaly, split, resolution, background, images=None, masks=None):
        if (images is None) != (masks is None):
            raise ValueError("Load Defect Set: connect both images and masks, or neither (then the folder is read)")
        if images is not None:
            dataset, report = memory_dataset(images, masks, resolution, background)
        else:
            dataset, report = folder_dataset(folder, category, anomaly, split, resolution, background)
        items = dataset.items()
        pictures = mark_resolution(as_image_batch(items, "image"), resolution)
        masks_out = torch.stack([it["mask"][0] for it in items])
        backgrounds = as_image_batch(items, "background") if background else torch.zeros_like(pictures[:1])
        return pictures, masks_out, backgrounds, report


NODE_CLASS_MAPPINGS = {"DualAnoDiffLoadTrainingSet": DualAnoDiffLoadTrainingSet}
NODE_DISPLAY_NAME_MAPPINGS = {"DualAnoDiffLoadTrainingSet": "Load Defect Set"}
