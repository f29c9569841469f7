"""Extract Anomaly Mask: the defect mask from the anomaly branch's image (the defect alone on mid-grey)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import torch

from ...anodiff.common.assets import u2netp_path
from ...anodiff.data import masks

try:
    import folder_paths
except ImportError:
    folder_paths = None

FOLDER = "dualanodiff"
PACK_MODELS = Path(__file__).resolve().parents[2] / "models"
METHODS = {"u2netp": "u2netp", "grey distance": "grey"}
"""Widget label -> ``anodiff.data.masks`` method."""

TOOLTIPS = {
    "anomaly": "The anomaly branch's decoded image (defect on grey) from the Dual Sampler; one mask per image.",
    "method": "u2netp: the U²-Net-P saliency model, as the authors do. grey distance: how far each pixel is from "
    "the grey canvas; needs no model.",
    "threshold": "Cut-off on the min-max normalised score; the authors use 0.5. Lower it to take in faint edges.",
    "grow": "Pixels to add round the mask (positive) or take away (negative), applied after min_area.",
    "min_area": "Drop mask regions smaller than this many pixels (specks, noise); 0 keeps all.",
}

_MODELS: dict[str, masks.U2NetP] = {}
_MODELS_LOCK = threading.Lock()


def model_dirs() -> list[Path]:
    """Where the node looks for ``u2netp.onnx``: ``models/dualanodiff`` (and its extra_model_paths.yaml entries),
    then the pack's own ``models/`` (where install.py puts it)."""
    dirs: list[Path] = []
    if folder_paths is not None:
        registered, _ = folder_paths.folder_names_and_paths.get(FOLDER, ([], set()))
        dirs += [Path(p) for p in registered] + [Path(folder_paths.models_dir) / FOLDER]
    dirs.append(PACK_MODELS)
    return list(dict.fromkeys(dirs))


def load_u2netp() -> masks.U2NetP:
    """The U²-Net-P model, one per file for the whole process (the ONNX session loads on first use)."""
    try:
        path = u2netp_path(model_dirs())
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"Extract Anomaly Mask: {err} Put it in models/{FOLDER}, or set method to 'grey distance', "
            "which needs no model."
        ) from err
    key = os.path.realpath(path)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = masks.U2NetP(path)
        return _MODELS[key]


def _progress(total: int):
    """ComfyUI's progress bar and interrupt check, or no-ops outside ComfyUI."""
    try:
        import comfy.model_management
        import comfy.utils
    except ImportError:
        return (lambda: None), (lambda: None)
    bar = comfy.utils.ProgressBar(total)
    return comfy.model_management.throw_exception_if_processing_interrupted, (lambda: bar.update(1))


class DualAnoDiffExtractMask:
    DESCRIPTION = (
        "Segments the defect in the anomaly branch's image (the defect drawn alone on a mid-grey canvas), as the "
        "DualAnoDiff authors do with U²-Net, and returns the mask with a red-tinted preview. 'u2netp' needs "
        "u2netp.onnx (installed by the pack's install.py); 'grey distance' needs no model and marks pixels that "
        "stray from the grey canvas."
    )
    CATEGORY = "DualAnoDiff/mask"
    FUNCTION = "extract"
    RETURN_TYPES = ("MASK", "IMAGE")
    RETURN_NAMES = ("mask", "overlay")
    OUTPUT_TOOLTIPS = (
        "The defect mask, 1 on the defect and 0 elsewhere, one per input image.",
        "The anomaly image with the mask tinted red and outlined, to check the mask.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "anomaly": ("IMAGE", {"tooltip": TOOLTIPS["anomaly"]}),
                "method": (list(METHODS), {"default": "u2netp", "tooltip": TOOLTIPS["method"]}),
                "threshold": (
                    "FLOAT",
                    {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": TOOLTIPS["threshold"]},
                ),
                "grow": ("INT", {"default": 0, "min": -64, "max": 64, "step": 1, "tooltip": TOOLTIPS["grow"]}),
                "min_area": (
                    "INT",
                    {"default": 0, "min": 0, "max": 1 << 24, "step": 1, "tooltip": TOOLTIPS["min_area"]},
                ),
            }
        }

    def extract(self, anomaly, method, threshold, grow, min_area):
        if method not in METHODS:
            raise ValueError(f"Extract Anomaly Mask: method must be one of {', '.join(METHODS)}, got {method!r}")
        if anomaly.ndim != 4 or anomaly.shape[-1] not in (3, 4):
            raise ValueError(f"Extract Anomaly Mask: anomaly must be an IMAGE (B, H, W, 3), got {tuple(anomaly.shape)}")
        model = load_u2netp() if METHODS[method] == "u2netp" else None
        images = anomaly[..., :3].detach().to("cpu", torch.float32).numpy()
        check_interrupt, step = _progress(len(images))
        found, previews = [], []
        for image in images:
            check_interrupt()
            mask = masks.extract_mask(image, METHODS[method], threshold, grow, min_area, model=model)
            found.append(mask)
            previews.append(masks.overlay(image, mask))
            step()
        mask_out = torch.from_numpy(np.stack(found).astype(np.float32))
        return (mask_out, torch.from_numpy(np.stack(previews)))


NODE_CLASS_MAPPINGS = {"DualAnoDiffExtractMask": DualAnoDiffExtractMask}
NODE_DISPLAY_NAME_MAPPINGS = {"DualAnoDiffExtractMask": "Extract Anomaly Mask"}
