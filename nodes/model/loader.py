"""Load Dual LoRA: a DualAnoDiff weight file onto a cloned SD1.5 MODEL and CLIP."""

from __future__ import annotations

import os

from .attach import attach_dual, check_sd15_layout, unet_widths
from .files import folded_file, not_dual_reason
from .patch import compute_dtype

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
    """Dual weight files only: models/dualanodiff, then models/loras as ``loras/<name>`` (ordinary LoRAs left out)."""
    import folder_paths

    ours = folder_paths.get_filename_list(FOLDER)
    loras = [
        LORAS_PREFIX + f
        for f in folder_paths.get_filename_list("loras")
        if not_dual_reason(folder_paths.get_full_path("loras", f)) is None
    ]
    return sorted(f for f in ours if not_dual_reason(folder_paths.get_full_path(FOLDER, f)) is None) + sorted(loras)


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
                "lora_name": (
                    list_files(),
                    {
                        "tooltip": "A dual weight file in models/dualanodiff (or models/loras; "
                        "ordinary LoRAs are not listed)."
                    },
                ),
                "strength_global": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": -4.0,
                        "max": 4.0,
                        "step": 0.05,
                        "tooltip": "LoRA strength of the global branch (whole image).",
                    },
                ),
                "strength_anomaly": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": -4.0,
                        "max": 4.0,
                        "step": 0.05,
                        "tooltip": "LoRA strength of the anomaly branch (defect on grey).",
                    },
                ),
                "strength_clip": (
                    "FLOAT",
                    {
                        "default": 1.0,
                        "min": -4.0,
                        "max": 4.0,
                        "step": 0.05,
                        "tooltip": "Strength of the text-encoder LoRA shared by both prompts.",
                    },
                ),
            },
            "optional": {
                "saim": (
                    "BOOLEAN",
                    {
                        "default": True,
                        "tooltip": "Let the branches exchange attention (SAIM). "
                        "Off only to compare: the defect then lands anywhere in each branch.",
                    },
                ),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, lora_name):
        """At queue time: a chosen file that is not dual weights (an ordinary LoRA) is named before anything runs."""
        try:
            reason = not_dual_reason(resolve(lora_name))
        except FileNotFoundError as err:
            return f"Load Dual LoRA: lora_name: {err}"
        return True if reason is None else f"Load Dual LoRA: lora_name: {reason}"

    def load(self, model, clip, lora_name, strength_global, strength_anomaly, strength_clip, saim=True):
        check_sd15_layout(model)
        folded = folded_file(resolve(lora_name), compute_dtype(model), model.offload_device)  # once per file
        folded.dual.check_unet(*unet_widths(model))
        return attach_dual(model, clip, folded, (strength_global, strength_anomaly), strength_clip, saim, lora_name)


register_folder()

NODE_CLASS_MAPPINGS = {"DualAnoDiffLoadLoRA": DualAnoDiffLoadLoRA}
NODE_DISPLAY_NAME_MAPPINGS = {"DualAnoDiffLoadLoRA": "Load Dual LoRA"}
