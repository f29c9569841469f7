"""Test-only ComfyUI node that loads the tiny SD1.5-shaped MODEL/CLIP/VAE from ``tests/comfy/tiny.py``.

The e2e server loads this folder through an ``extra_model_paths`` ``custom_nodes`` entry;
it is never shipped with the pack. ``tiny.py`` is loaded from its file under a private
module name, so nothing is added to ``sys.path`` of the server.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

_TINY_PATH = Path(__file__).resolve().parents[2] / "tiny.py"
_TINY_MODULE = "anodiff_tests_comfy_tiny"


def _load_tiny() -> ModuleType:
    """Import ``tests/comfy/tiny.py`` once under a name that cannot collide with other modules."""
    if _TINY_MODULE in sys.modules:
        return sys.modules[_TINY_MODULE]
    spec = importlib.util.spec_from_file_location(_TINY_MODULE, _TINY_PATH)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {_TINY_PATH}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_TINY_MODULE] = module
    spec.loader.exec_module(module)
    return module


class TinySD15Loader:
    """Stands in for CheckpointLoaderSimple: no SD1.5 weights exist offline, so build tiny random ones."""

    DESCRIPTION = "Test only: a tiny, deterministically filled SD1.5-shaped MODEL, CLIP and VAE."
    CATEGORY = "testing"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    RETURN_NAMES = ("model", "clip", "vae")
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        """One optional seed so a test can ask for a different but reproducible model."""
        return {
            "required": {},
            "optional": {
                "seed": ("INT", {"default": 0, "min": 0, "max": 1000, "tooltip": "offset added to all weight seeds"}),
            },
        }

    def load(self, seed: int = 0) -> tuple[Any, Any, Any]:
        """Build the models with one torch thread: on 2 cores the default thread count makes CPU runs 20x slower."""
        import torch

        torch.set_num_threads(1)
        return _load_tiny().build_tiny_sd15(seed)


NODE_CLASS_MAPPINGS = {"TinySD15Loader": TinySD15Loader}
NODE_DISPLAY_NAME_MAPPINGS = {"TinySD15Loader": "Tiny SD1.5 Loader (test only)"}
