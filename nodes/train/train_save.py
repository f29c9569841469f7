"""Save Dual LoRA and Loss Graph: the trained weights into models/dualanodiff, the loss curve as an IMAGE.

A saved model is ``models/dualanodiff/<prefix>_NNNNN.safetensors`` in the weight-file schema (Load Dual LoRA
lists it at once). Its optimiser state, what an exact continuation needs, goes beside it in
``models/dualanodiff_state/`` under the same name, so Load Dual LoRA's list holds models only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save

from ...anodiff.common.files import write_new
from ...anodiff.common.imageio import write_atomic
from ...anodiff.train.loss_plot import loss_picture
from ...anodiff.train.session import TrainedDual
from ...anodiff.weights.load import load_dual
from ..model.loader import FOLDER

STATE_FOLDER = "dualanodiff_state"
STATE_SUFFIX = ".state.safetensors"
LOSSES = "loss_history"  # beside the optimiser tensors (keyed "<param>.<name>") in the state file
NONE = "none"
PREFIX = re.compile(r"^[\w\-. ]+(/[\w\-. ]+)*$")


def _folder(name: str) -> Path:
    """The first folder ComfyUI has for ``name`` (models/<name> unless extra_model_paths.yaml says otherwise)."""
    import folder_paths

    return Path(folder_paths.get_folder_paths(name)[0])


def state_path(model_path: Path) -> Path:
    """Where the optimiser state of ``<a dualanodiff folder>/<rel>.safetensors`` lives; ValueError outside them."""
    import folder_paths

    for root in folder_paths.get_folder_paths(FOLDER):
        try:
            rel = model_path.resolve().relative_to(Path(root).resolve())
        except ValueError:
            continue
        return _folder(STATE_FOLDER) / rel.with_suffix(STATE_SUFFIX)
    raise ValueError(f"{model_path} is not in a {FOLDER} folder")


def save_trained(trained: TrainedDual, prefix: str, resumable: bool = True) -> Path:
    """Write ``<prefix>_NNNNN.safetensors`` (the first free number, never overwriting) and its optimiser state.

    A number is free when neither the model nor a state file of that name exists (a state left by a deleted or
    moved model is kept, not paired with a new model); the model file claims the number, then its state is written.
    """
    if not PREFIX.match(prefix) or ".." in prefix.split("/"):
        raise ValueError(
            f"Save Dual LoRA: filename_prefix {prefix!r} must be a name or sub/name (letters, digits, "
            "- _ . and spaces), inside models/dualanodiff"
        )
    data = save({k: v.contiguous() for k, v in trained.dual.tensors.items()}, metadata=trained.dual.metadata)
    folder = _folder(FOLDER)
    for n in range(1, 100000):
        path = folder / f"{prefix}_{n:05d}.safetensors"
        if path.exists() or state_path(path).exists():
            continue
        try:
            write_new(path, data)
        except FileExistsError:  # another save took the number first
            continue
        if resumable and trained.optimizer:
            meta = {"steps": str(trained.steps), "model": path.name}
            history = {LOSSES: torch.tensor(trained.losses, dtype=torch.float64)} if trained.losses else {}
            # the number is ours (the model file claimed it): a state that appeared since is a racing stale copy
            write_atomic(state_path(path), save({**trained.optimizer, **history}, metadata=meta))
        return path
    raise FileExistsError(f"Save Dual LoRA: no free number for {prefix} in {folder}")


AUTOSAVE = "autosave"  # sub-folder of models/dualanodiff


def autosave_trained(trained: TrainedDual, name: str) -> str:
    """Write ``<models/dualanodiff>/autosave/<name>.safetensors`` and its optimiser state, replacing this run's
    previous autosave atomically (model, then state: a crash between leaves a pair ``load_trained`` refuses, never
    a silently wrong one). Returns the name Load Dual LoRA and ``resume_file`` list."""
    path = _folder(FOLDER) / AUTOSAVE / f"{name}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(
        path, save({k: v.contiguous() for k, v in trained.dual.tensors.items()}, metadata=trained.dual.metadata)
    )
    meta = {"steps": str(trained.steps), "model": path.name}
    history = {LOSSES: torch.tensor(trained.losses, dtype=torch.float64)} if trained.losses else {}
    write_atomic(state_path(path), save({**trained.optimizer, **history}, metadata=meta))
    return path.relative_to(_folder(FOLDER)).as_posix()


def resumable_files() -> list[str]:
    try:
        from ..model.loader import list_files

        return [NONE, *list_files()]
    except (ImportError, KeyError):  # outside ComfyUI
        return [NONE]


def load_trained(name: str) -> TrainedDual | None:
    """A file of models/dualanodiff with its optimiser state (an empty state when it has none: AdamW restarts)."""
    if not name or name == NONE:
        return None
    from safetensors import safe_open

    from ..model.loader import resolve

    path = Path(resolve(name))
    dual = load_dual(path, sd15_only=False)
    optimizer: dict[str, torch.Tensor] = {}
    try:
        state = state_path(path)
    except ValueError:  # outside models/dualanodiff (models/loras): no state kept there
        state = None
    if state is not None and state.is_file():
        with safe_open(str(state), "pt") as f:
            steps = (f.metadata() or {}).get("steps")
            if steps != dual.metadata.get("steps"):
                raise ValueError(
                    f"{state}: optimiser state of step {steps}, but {name} is at "
                    f"step {dual.metadata.get('steps')}; the two files do not belong together"
                )
            optimizer = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    losses = optimizer.pop(LOSSES, torch.zeros(0)).tolist()
    return TrainedDual(dual, optimizer, tuple(losses))


class DualAnoDiffSaveModel:
    DESCRIPTION = (
        "Writes trained dual weights to models/dualanodiff/<prefix>_NNNNN.safetensors (never overwriting), with "
        "steps, prompts and image count in the metadata; Load Dual LoRA lists it at once. With resumable on, the "
        "optimiser state goes to models/dualanodiff_state so Train Dual LoRA can continue the file exactly."
    )
    CATEGORY = "DualAnoDiff/training"
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("filename",)
    OUTPUT_TOOLTIPS = ("The file name as Load Dual LoRA lists it.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "dual_weights": ("DUAL_ANODIFF_WEIGHTS", {"tooltip": "Weights from Train Dual LoRA."}),
                "filename_prefix": (
                    "STRING",
                    {
                        "default": "dualanodiff",
                        "tooltip": "File name start; _00001, _00002... is added. sub/name saves in a sub-folder.",
                    },
                ),
                "resumable": (
                    "BOOLEAN",
                    {
                        "default": True,
                        "tooltip": "Also keep the optimiser state (about twice "
                        "the model's size) so training can continue exactly from this file.",
                    },
                ),
            }
        }

    def save(self, dual_weights, filename_prefix, resumable=True):
        path = save_trained(dual_weights, filename_prefix.strip(), resumable)
        name = path.relative_to(_folder(FOLDER)).as_posix()
        return {"ui": {"text": [name]}, "result": (name,)}


class DualAnoDiffLossGraph:
    DESCRIPTION = "Draws the training loss per step (raw in grey, trailing mean in blue) as an IMAGE."
    CATEGORY = "DualAnoDiff/training"
    FUNCTION = "draw"
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The loss curve; preview or save it like any image.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "loss": ("LOSS_MAP", {"tooltip": "The loss output of Train Dual LoRA."}),
                "width": ("INT", {"default": 768, "min": 256, "max": 4096, "tooltip": "Picture width in pixels."}),
                "height": ("INT", {"default": 384, "min": 128, "max": 4096, "tooltip": "Picture height in pixels."}),
            }
        }

    def draw(self, loss, width, height):
        losses = loss.get("loss") if isinstance(loss, dict) else None
        if not losses:
            raise ValueError("Loss Graph: the loss holds no steps; connect Train Dual LoRA's loss output")
        picture = loss_picture(losses, width, height)
        return (torch.from_numpy(picture.astype(np.float32) / 255.0)[None],)


def register_state_folder() -> None:
    try:
        import folder_paths
    except ImportError:
        return
    if STATE_FOLDER not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[STATE_FOLDER] = (
            [os.path.join(folder_paths.models_dir, STATE_FOLDER)],
            {".safetensors"},
        )


register_state_folder()

NODE_CLASS_MAPPINGS = {"DualAnoDiffSaveModel": DualAnoDiffSaveModel, "DualAnoDiffLossGraph": DualAnoDiffLossGraph}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DualAnoDiffSaveModel": "Save Dual LoRA",
    "DualAnoDiffLossGraph": "Loss Graph (Dual LoRA)",
}
