"""ComfyUI entry point of the DualAnoDiff node pack; the nodes live in ``nodes/``, the model in ``anodiff/``."""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
