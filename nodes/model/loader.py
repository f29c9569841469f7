"""Load Dual LoRA: a DualAnoDiff weight file onto a cloned SD1.5 MODEL and CLIP."""

from __future__ import annotations

import os

from ...anodiff.weights.load import load_dual
from .patch import attach_dual, check_sd15_layout, unet_widths

FOLDER = "dualanodiff"
EXTENSIONS = {".safetensors", ".bin"}
LORAS_PREFIX = "loras/"


def register_folder() -> None:
    """``models/dualanodiff`` for our files (plus any ``dualanodiff:`` entries from extra_model_paths.yaml)."""
    try:
        import folder_paths
    except ImportError:
        return
    default = os.path.join(folder_paths.models_dir, FOLDER)
    paths, _ = folder_paths.folder_names_and_paths.get(FOLDER, ([], set()))
    if default not in paths:
        paths = [default, *paths]
    folder_paths.folder_names_and_paths[FOLDER] = (paths, EXTENSIONS)


def list_files() -> list[str]:
    import folder_paths

    ours = folder_paths.get_filename_list(FOLDER)
    loras = [LORAS_PREFIX + f for f in folder_paths.get_filename_list("loras")]
    return sorted(ours) + sorted(loras)


def resolve(name: str) -> str:
    import folder_paths

    if name.startswith(LORAS_PREFIX) and name not in folder_paths.get_filename_list(FOLDER):
        return folder_paths.get_full_path_or_raise("loras", name[len(LORAS_PREFIX) :])
    return folder_paths.get_full_path_or_raise(FOLDER, name)


class DualAnoDiffLoadLoRA:
    DESCRIPTION = (
        "Loads a DualAnoDiff model (our .safetensors or the authors' pytorch_lora_weights.bin) onto an SD1.5 "
        "MODEL and CLIP: a LoRA per branch on every attention, SAIM between the branches, and the shared "
        "text-encoder LoRA. Feed the MODEL to Dual Sampler (SAIM)."
    )
    CATEGORY = "DualAnoDiff/loaders"
    FUNCTION = "load"
    RETURN_TYPES = ("MODEL", "CLIP")
    OUTPUT_TOOLTIPS = ("The SD1.5 model with the dual-branch LoRA and SAIM.", "CLIP with the text-encoder LoRA.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "An SD1.5 checkpoint's MODEL (the one the dual model was trained on)."}),
                "clip": ("CLIP", {"tooltip": "The same checkpoint's CLIP."}),
                "lora_name": (list_files(), {"tooltip": "A file in models/dualanodiff (or models/loras)."}),
                "strength_global": ("FLOAT", {"default": 1.0, "min": -4.0, "max": 4.0, "step": 0.05,
                                              "tooltip": "LoRA strength of the global branch (whole image)."}),
                "strength_anomaly": ("FLOAT", {"default": 1.0, "min": -4.0, "max": 4.0, "step": 0.05,
                                               "tooltip": "LoRA strength of the anomaly branch (defect on grey)."}),
                "strength_clip": ("FLOAT", {"default": 1.0, "min": -4.0, "max": 4.0, "step": 0.05,
                                            "tooltip": "Strength of the text-encoder LoRA shared by both prompts."}),
            },
            "optional": {
                "saim": ("BOOLEAN", {"default": True, "tooltip": "Let the branches exchange attention (SAIM). "
                                     "Off only to compare: the defect then lands anywhere in each branch."}),
            },
        }  # fmt: skip

    def load(self, model, clip, lora_name, strength_global, strength_anomaly, strength_clip, saim=True):
        dual = load_dual(resolve(lora_name), sd15_only=False)  # widths are checked against the MODEL below
        check_sd15_layout(model)
        dual.check_unet(*unet_widths(model))
        return attach_dual(model, clip, dual, (strength_global, strength_anomaly), strength_clip, saim, lora_name)


register_folder()

NODE_CLASS_MAPPINGS = {"DualAnoDiffLoadLoRA": DualAnoDiffLoadLoRA}
NODE_DISPLAY_NAME_MAPPINGS = {"DualAnoDiffLoadLoRA": "Load Dual LoRA"}
