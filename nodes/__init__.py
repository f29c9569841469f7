"""ComfyUI adapters over ``anodiff``: each module contributes its node classes to the mappings below."""

from __future__ import annotations

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
