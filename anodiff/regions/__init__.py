"""Where a defect goes in a photo: random placement on the object, crop-and-stitch, compositing, several defects."""

from ..legacy import forward

__getattr__ = forward(f"{__name__}.placement")
