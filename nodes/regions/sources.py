"""Load Photo Folder: a folder of normal photos as a list (each at its own size) with their file names, so one
workflow run puts defects into every photo (ComfyUI runs the nodes after it once per photo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...anodiff.common.imageio import folder_stamp
from ...anodiff.generate.sources import load_folder
from ..folders import confined_folder

MODES = ("list", "batch")


def input_folder(folder: str, node: str, empty_hint: str) -> Path:
    """A folder relative to ComfyUI's input folder (where Load Image reads), or an absolute one inside ComfyUI's
    input/output folders or a folder listed in the user's ``dualanodiff.yaml`` (``nodes/folders.py``)."""
    return confined_folder(folder, node, empty_hint)


def resolve_folder(folder: str) -> Path:
    return input_folder(folder, "Load Photo Folder", "give a folder of photos (absolute, or inside input/)")


class DualAnoDiffLoadPhotoFolder:
    DESCRIPTION = (
        "Loads every photo of a folder (sorted by name), each at its own size, with its file name. The outputs are "
        "lists: the nodes after it run once per photo, e.g. Random Defect Region -> Crop Region -> ... -> Stitch."
    )
    CATEGORY = "DualAnoDiff/region"
    FUNCTION = "load"
    RETURN_TYPES = ("IMAGE", "STRING", "INT")
    RETURN_NAMES = ("images", "names", "count")
    OUTPUT_IS_LIST = (True, True, False)
    OUTPUT_TOOLTIPS = (
        "The photos: one IMAGE each (list), or one batch (batch).",
        "Their file names in the same order (batch: one string, a name per line).",
        "How many were loaded.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "folder": (
                    "STRING",
                    {
                        "default": "normal_photos",
                        "tooltip": "Folder of normal photos, relative to ComfyUI's input folder "
                        "(or absolute: inside input/ or output/, or listed in "
                        "user/dualanodiff.yaml).",
                    },
                ),
                "start": (
                    "INT",
                    {
                        "default": 0,
                        "min": 0,
                        "max": 1_000_000,
                        "tooltip": "First photo (by name order) to load; for working through a folder in parts.",
                    },
                ),
                "limit": ("INT", {"default": 0, "min": 0, "max": 100_000, "tooltip": "How many photos; 0 loads all."}),
                "output": (
                    list(MODES),
                    {
                        "default": "list",
                        "tooltip": "list: one IMAGE per photo, any sizes (later nodes run per photo). "
                        "batch: one IMAGE batch of same-size photos, names one per line.",
                    },
                ),
            }
        }

    @classmethod
    def IS_CHANGED(cls, folder="", **_):
        """Re-read the folder when a photo is added, removed or rewritten (ComfyUI caches on the inputs)."""
        try:
            return folder_stamp(resolve_folder(folder))
        except (ValueError, ImportError):
            return ""

    def load(self, folder, start, limit, output="list"):
        path = resolve_folder(folder)
        try:
            images, names = load_folder(path, int(start), int(limit))
        except (FileNotFoundError, ValueError) as err:
            raise ValueError(f"Load Photo Folder: {err}") from err
        if output == "list":
            return [torch.from_numpy(image)[None] for image in images], names, len(names)
        for image, name in zip(images, names):
            if image.shape != images[0].shape:
                raise ValueError(
                    f"Load Photo Folder: batch needs photos of one size, but {name} is "
                    f"{image.shape[1]}x{image.shape[0]} and {names[0]} {images[0].shape[1]}x"
                    f"{images[0].shape[0]}; use output=list"
                )
        return [torch.from_numpy(np.stack(images))], ["\n".join(names)], len(names)


NODE_CLASS_MAPPINGS = {"DualAnoDiffLoadPhotoFolder": DualAnoDiffLoadPhotoFolder}
NODE_DISPLAY_NAME_MAPPINGS = {"DualAnoDiffLoadPhotoFolder": "Load Photo Folder"}
