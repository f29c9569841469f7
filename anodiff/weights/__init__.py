"""The weight file: our safetensors schema, the authors' format converted to it, the shared text-encoder LoRA."""

from ..legacy import forward

__getattr__ = forward(f"{__name__}.schema", f"{__name__}.load")
