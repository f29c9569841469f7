"""Filter Pairs and Export Dataset: drop pairs with untrustworthy masks, then add the rest to an MVTec/COCO set."""

from __future__ import annotations

import logging

import torch

from ...anodiff.dataset import export
from ...anodiff.dataset import filter as filtering
from ...anodiff.dataset.checks import GATE
from .inputs import image_array, mask_array, output_root

log = logging.getLogger(__name__)

FORMATS = {"mvtec+coco": ("mvtec", "coco"), "mvtec": ("mvtec",), "coco": ("coco",)}
"""Widget label -> ``anodiff.dataset.export`` formats."""

FILTER_TOOLTIPS = {
    "image": "The global (whole) images of the pairs, e.g. decoded from the Dual Sampler or from Composite Region.",
    "mask": "One defect mask per image, e.g. from Extract Anomaly Mask.",
    "max_area": "Drop a pair whose mask covers more than this share of the image (a background, not a defect). "
    "1 turns the check off.",
    "min_area": "Drop a pair whose mask covers less than this share of the image (a speck, not a defect; 0.001 = "
    "0.1%). 0 turns the check off.",
    "max_pieces": "Drop a pair whose mask falls into more than this many separate (8-connected) pieces: scattered "
    "noise, not one defect. Raise it for images with several defects; 0 turns the check off.",
    "min_foreground": "With a foreground mask: drop a pair when less than this share of its mask lies on the "
    "object. 0 turns the check off.",
    "min_agreement": "With a source photo: drop a pair when the IoU of its mask and the region where the image "
    "differs from the photo is below this. 0 turns the check off.",
    "change_threshold": "With a source photo: how much a pixel must differ from the photo (largest channel "
    "difference, after a light blur) to count as changed.",
    "source": "Optional: the normal photo(s) the defects were generated into (the Region Latent source); one for "
    "all pairs or one per pair, resized to the images.",
    "foreground": "Optional: where the object is, one for all pairs or one per pair, e.g. Extract Anomaly Mask "
    "with u2netp run on the global image. Leave empty for textures (carpet, wood).",
}
EXPORT_TOOLTIPS = {
    "images": "The images to add to the dataset (one per mask).",
    "masks": "Their defect masks, e.g. the kept masks of Filter Pairs.",
    "output_dir": "Dataset folder, relative to ComfyUI's output folder; paths leading outside it are refused.",
    "category": "The object category, e.g. bottle: the MVTec folder and the COCO file annotations/<category>.json.",
    "anomaly": "The anomaly type, e.g. broken_large: the MVTec sub-folder and the COCO category name.",
    "format": "mvtec: test/<anomaly>/NNN.png with ground_truth/<anomaly>/NNN_mask.png. coco: the images with RLE "
    "instance annotations, one per connected region. Exports add to what is there and never overwrite.",
}


def _blocked():
    """ComfyUI's silent ExecutionBlocker: nodes fed by a blocked output do not run (None outside ComfyUI)."""
    try:
        from comfy_execution.graph_utils import ExecutionBlocker
    except ImportError:
        return None
    return ExecutionBlocker(None)


class DualAnoDiffFilterPairs:
    DESCRIPTION = (
        "Drops generated pairs whose mask cannot be trusted and says why: an empty mask, a mask covering too little "
        "or too much of the image, a mask in too many pieces, a mask mostly off the object (with a foreground "
        "mask), or a mask that disagrees with where "
        "the image differs from the source photo (with a source). If every pair is dropped, the image and mask "
        "outputs are blocked, so Save Image or Export Dataset after them do not run, and the report still comes out."
    )
    CATEGORY = "DualAnoDiff/dataset"
    FUNCTION = "filter"
    RETURN_TYPES = ("IMAGE", "MASK", "STRING")
    RETURN_NAMES = ("images", "masks", "report")
    OUTPUT_TOOLTIPS = (
        "The kept images, in their original order (blocked when none is kept).",
        "Their masks, unchanged (blocked when none is kept).",
        "One line per dropped pair, 'pair <index in the batch>: <reason>'; empty when all are kept.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        unit = {"min": 0.0, "max": 1.0, "step": 0.01}
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": FILTER_TOOLTIPS["image"]}),
                "mask": ("MASK", {"tooltip": FILTER_TOOLTIPS["mask"]}),
                "max_area": (
                    "FLOAT",
                    {"default": GATE["max_area"], **unit, "min": 0.01, "tooltip": FILTER_TOOLTIPS["max_area"]},
                ),
                "min_foreground": ("FLOAT", {"default": 0.5, **unit, "tooltip": FILTER_TOOLTIPS["min_foreground"]}),
                "min_agreement": ("FLOAT", {"default": 0.3, **unit, "tooltip": FILTER_TOOLTIPS["min_agreement"]}),
                "change_threshold": ("FLOAT", {"default": 0.1, **unit, "tooltip": FILTER_TOOLTIPS["change_threshold"]}),
            },
            "optional": {
                "source": ("IMAGE", {"tooltip": FILTER_TOOLTIPS["source"]}),
                "foreground": ("MASK", {"tooltip": FILTER_TOOLTIPS["foreground"]}),
                "min_area": (
                    "FLOAT",
                    {
                        "default": GATE["min_area"],
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.0005,
                        "tooltip": FILTER_TOOLTIPS["min_area"],
                    },
                ),
                "max_pieces": (
                    "INT",
                    {"default": GATE["max_pieces"], "min": 0, "max": 1000, "tooltip": FILTER_TOOLTIPS["max_pieces"]},
                ),
            },
        }

    def filter(
        self,
        image,
        mask,
        max_area,
        min_foreground,
        min_agreement,
        change_threshold=0.1,
        source=None,
        foreground=None,
        min_area=GATE["min_area"],
        max_pieces=GATE["max_pieces"],
        **kwargs,
    ):
        node = "Filter Pairs"
        images = image_array(image, node, "image")
        count, shape = images.shape[0], images.shape[1:3]
        masks = mask_array(mask, count, node, "mask")
        fgs = None
        if foreground is not None:
            fgs = [
                filtering.match_size(f, shape) > 0.5 for f in mask_array(foreground, count, node, "foreground", True)
            ]
        if source is not None:
            photos = image_array(source, node, "source")
            if photos.shape[0] not in (1, count):
                raise ValueError(f"{node}: {photos.shape[0]} sources for {count} images; give one, or one per image")
            source = [filtering.match_size(photos[min(i, len(photos) - 1)], shape) for i in range(count)]
        try:
            kept, dropped = filtering.filter_pairs(
                images,
                masks,
                fgs,
                source,
                max_area=max_area,
                min_foreground=min_foreground,
                min_agreement=min_agreement,
                change_threshold=change_threshold,
                min_area=min_area,
                max_pieces=max_pieces,
            )
        except ValueError as err:
            raise ValueError(f"{node}: {err}") from err
        report = "\n".join(f"pair {i}: {reason}" for i, reason in dropped.items())
        log.info("%s: kept %d of %d pairs", node, len(kept), count)
        if kept:
            mask = mask[None] if mask.ndim == 2 else mask
            index = torch.tensor(kept, dtype=torch.long)
            return image[index.to(image.device)], mask[index.to(mask.device)], report
        blocker = _blocked()
        if blocker is None:
            raise ValueError(f"{node}: every pair was dropped:\n{report}")
        return blocker, blocker, report


class ExportNodeOutput:
    """What both export nodes declare to ComfyUI: an output node in DualAnoDiff/dataset returning one summary."""

    CATEGORY = "DualAnoDiff/dataset"
    FUNCTION = "export"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("summary",)
    OUTPUT_TOOLTIPS = ("What was written: the folder, the pair numbers and the COCO annotations added.",)

    @staticmethod
    def exported(node: str, *args, **kwargs) -> dict:
        """Run ``export_dataset(*args, **kwargs)`` without rebuilding the COCO file (that reads every record, so a
        call would cost more the larger the set; Finalise Dataset does it once); its errors name the node, its
        summary shows in the node."""
        try:
            report = export.export_dataset(*args, merge=False, **kwargs)
        except ValueError as err:
            raise ValueError(f"{node}: {err}") from err
        summary = report.summary()
        if report.indices and "coco" in report.formats:
            summary += f"; COCO records appended, queue Finalise Dataset to write annotations/{report.category}.json"
        log.info("%s: %s", node, summary)
        return {"ui": {"text": [summary]}, "result": (summary,)}


class DualAnoDiffExportDataset(ExportNodeOutput):
    DESCRIPTION = (
        "Adds image/mask pairs to a dataset in ComfyUI's output folder: an MVTec AD tree "
        "(<category>/test/<anomaly>/NNN.png, ground_truth/<anomaly>/NNN_mask.png) and/or COCO instance annotations "
        "(annotations/<category>.json, one category per anomaly type). Numbering continues after the pairs already "
        "there, nothing is overwritten, and the COCO file is extended."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": EXPORT_TOOLTIPS["images"]}),
                "masks": ("MASK", {"tooltip": EXPORT_TOOLTIPS["masks"]}),
                "output_dir": ("STRING", {"default": "dualanodiff_dataset", "tooltip": EXPORT_TOOLTIPS["output_dir"]}),
                "category": ("STRING", {"default": "object", "tooltip": EXPORT_TOOLTIPS["category"]}),
                "anomaly": ("STRING", {"default": "defect", "tooltip": EXPORT_TOOLTIPS["anomaly"]}),
                "format": (list(FORMATS), {"default": "mvtec+coco", "tooltip": EXPORT_TOOLTIPS["format"]}),
            }
        }

    def export(self, images, masks, output_dir, category, anomaly, format):
        node = "Export Dataset"
        if format not in FORMATS:
            raise ValueError(f"{node}: format must be one of {', '.join(FORMATS)}, got {format!r}")
        root = output_root(output_dir)
        pictures = image_array(images, node, "images")
        found = mask_array(masks, pictures.shape[0], node, "masks")
        return self.exported(node, pictures, found, root, category, anomaly, FORMATS[format])


class DualAnoDiffFinaliseDataset(ExportNodeOutput):
    DESCRIPTION = (
        "Writes the COCO file(s) annotations/<category>.json of a dataset that Export Dataset / Export Defects add "
        "to: those nodes only append each prompt's records (so every prompt costs the same however large the set "
        "grows), and this node merges them all. Queue it once after a batch; it runs on every queue."
    )
    FUNCTION = "finalise"
    OUTPUT_TOOLTIPS = ("Each COCO file written, with its image, annotation and category counts.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "output_dir": ("STRING", {"default": "dualanodiff_dataset", "tooltip": EXPORT_TOOLTIPS["output_dir"]}),
                "category": (
                    "STRING",
                    {
                        "default": "",
                        "tooltip": "The object category whose COCO file to write; "
                        "empty: every category with exported records.",
                    },
                ),
            }
        }

    @classmethod
    def IS_CHANGED(cls, **kwargs):
        return float("nan")  # the records change between queues while the inputs do not: never use a cached result

    def finalise(self, output_dir, category, **kwargs):
        node = "Finalise Dataset"
        root = output_root(output_dir, node)
        try:
            lines = [f"{path}: {count}" for path, count in export.finalise(root, category.strip() or None)]
        except (ValueError, FileNotFoundError) as err:
            raise ValueError(f"{node}: {err}") from err
        summary = "\n".join(lines)
        log.info("%s: %s", node, summary)
        return {"ui": {"text": [summary]}, "result": (summary,)}


NODE_CLASS_MAPPINGS = {
    "DualAnoDiffFilterPairs": DualAnoDiffFilterPairs,
    "DualAnoDiffExportDataset": DualAnoDiffExportDataset,
    "DualAnoDiffFinaliseDataset": DualAnoDiffFinaliseDataset,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DualAnoDiffFilterPairs": "Filter Pairs",
    "DualAnoDiffExportDataset": "Export Dataset",
    "DualAnoDiffFinaliseDataset": "Finalise Dataset",
}
