"""Defect Labels and Export Defects: several defects on one part merged into one label mask (id k for the k-th
defect) and exported with one COCO annotation per defect, its defect type as the category (regions.multi_defect)."""

from __future__ import annotations

import numpy as np
import torch

from ...anodiff.dataset.export import check_name
from ...anodiff.regions.multi_defect import check_disjoint, label_mask
from ...anodiff.regions.placement import PALETTE
from ..dataset.dataset import ExportNodeOutput
from ..dataset.inputs import mask_batch, output_root

SLOTS = 4


def split_types(types: str, count: int, node: str) -> list[str]:
    """``"crack, scratch"`` -> the defect type of id 1, 2, ...; too few or unsafe names are an error."""
    names = [t.strip() for t in types.split(",")]
    if len(names) < count or any(not n or n in (".", "..") or any(c in n for c in "/\\") for n in names):
        raise ValueError(
            f"{node}: defect_types must name a defect type for each of the {count} label(s), "
            f"comma-separated, in the order of Defect Labels' masks (plain names), got {types!r}"
        )
    return names


class DualAnoDiffDefectLabels:
    DESCRIPTION = (
        "Merges the masks of several defects on one photo (e.g. from chained Stitch Region nodes) into one label "
        "mask: 1 for mask_1, 2 for mask_2, ... Masks that overlap or lie within the feather of one another are "
        "refused: the later paste, grown by the feather, would have changed the earlier defect."
    )
    CATEGORY = "DualAnoDiff/region"
    FUNCTION = "merge"
    RETURN_TYPES = ("MASK", "MASK", "IMAGE")
    RETURN_NAMES = ("labels", "mask", "preview")
    OUTPUT_TOOLTIPS = (
        "Label mask: the defect's number (1, 2, ...) as the value, 0 elsewhere; feed to Export Defects.",
        "All defects together, 0/1.",
        "The defects tinted in distinct colours.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        optional = {
            f"mask_{k}": ("MASK", {"tooltip": f"Defect {k}'s mask at the photo's size (optional)."})
            for k in range(2, SLOTS + 1)
        }
        optional["feather"] = (
            "INT",
            {
                "default": 4,
                "min": 0,
                "max": 256,
                "tooltip": "Stitch Region's feather: masks closer than this to one another are refused.",
            },
        )
        return {
            "required": {"mask_1": ("MASK", {"tooltip": "The first defect's full-size mask (Stitch Region)."})},
            "optional": optional,
        }

    def merge(self, mask_1, feather=4, **more):
        given = [mask_1] + [more[f"mask_{k}"] for k in range(2, SLOTS + 1) if more.get(f"mask_{k}") is not None]
        masks = [mask_batch(m) for m in given]
        if any(m.shape != masks[0].shape for m in masks):
            raise ValueError(f"Defect Labels: masks differ in shape {[m.shape for m in masks]}; give full-size masks")
        labels, previews = [], []
        for b in range(masks[0].shape[0]):
            each = [m[b] > 0.5 for m in masks]
            try:
                check_disjoint(each, int(feather))
            except ValueError as err:
                raise ValueError(f"Defect Labels: {str(err).replace('regions', 'masks')}") from err
            label = label_mask(each)
            colour = np.zeros((*label.shape, 3), np.float32)
            for k in range(len(each)):
                colour[label == k + 1] = PALETTE[k % len(PALETTE)]
            labels.append(label.astype(np.float32))
            previews.append(colour)
        out = torch.from_numpy(np.stack(labels))
        return out, (out > 0).float(), torch.from_numpy(np.stack(previews))


class DualAnoDiffExportDefects(ExportNodeOutput):
    DESCRIPTION = (
        "Adds photos with several defects to a dataset in ComfyUI's output folder: the image, the union mask "
        "(MVTec) and one COCO annotation per defect, whose category is that defect's type. Never overwrites."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The full-size photos with their defects."}),
                "labels": ("MASK", {"tooltip": "Label masks from Defect Labels (defect number as the value)."}),
                "defect_types": (
                    "STRING",
                    {
                        "default": "crack, scratch",
                        "tooltip": "One defect type per label number, comma-separated: the COCO "
                        "category of each defect.",
                    },
                ),
                "output_dir": (
                    "STRING",
                    {
                        "default": "dualanodiff_dataset",
                        "tooltip": "Dataset folder, relative to ComfyUI's output folder.",
                    },
                ),
                "category": ("STRING", {"default": "object", "tooltip": "The object category (COCO file name)."}),
                "folder": (
                    "STRING",
                    {
                        "default": "multi_defect",
                        "tooltip": "The MVTec sub-folder for these images (test/<folder>/NNN.png).",
                    },
                ),
            }
        }

    def export(self, images, labels, defect_types, output_dir, category, folder):
        node = "Export Defects"
        pictures = images[..., :3].detach().to("cpu", torch.float32).numpy()
        ids = np.rint(mask_batch(labels)).astype(np.uint8)
        if ids.shape[0] != pictures.shape[0] or ids.shape[1:] != pictures.shape[1:3]:
            raise ValueError(
                f"{node}: labels {ids.shape} must hold one label mask of the image's size per image "
                f"{pictures.shape[:3]}"
            )
        types = split_types(defect_types, int(ids.max(initial=0)), node)
        try:
            folder = check_name(folder, "folder")  # the library calls it 'anomaly'; this node's input is 'folder'
        except ValueError as err:
            raise ValueError(f"{node}: {err}") from err
        root = output_root(output_dir, node)
        return self.exported(
            node,
            pictures,
            ids > 0,
            root,
            category,
            folder,
            ("mvtec", "coco"),
            sidecars=[({"defect_types": types}, i) for i in ids],
        )


NODE_CLASS_MAPPINGS = {
    "DualAnoDiffDefectLabels": DualAnoDiffDefectLabels,
    "DualAnoDiffExportDefects": DualAnoDiffExportDefects,
}
NODE_DISPLAY_NAME_MAPPINGS = {"DualAnoDiffDefectLabels": "Defect Labels", "DualAnoDiffExportDefects": "Export Defects"}
