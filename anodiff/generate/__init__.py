"""``anodiff generate``: many pairs from a trained model, resumable, sharded, with regions and source photos."""

from ..legacy import forward

__getattr__ = forward(f"{__name__}.run")
