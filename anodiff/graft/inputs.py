"""The graft mode's inputs checked (a clear error naming the input), brought to the working size, and the mask
of a result: the target region tightened to where the image departs from the normal one."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..common.imageio import as_float_image, resize

TIGHTEN_THRESHOLD = 8 / 255
"""Default for ``tighten``: a pixel counts as changed when one channel moved by more than 8 grey levels."""


class GraftInputError(ValueError):
    """A graft input that cannot be used; the message names it and says what was expected."""


def check_mask(mask: np.ndarray, name: str, image_shape: tuple[int, ...], image_name: str) -> np.ndarray:
    """(H, W) bool from a mask in [0, 1] (or 0/255) of the image's size, not empty."""
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[2] in (1, 3, 4):
        mask = mask[..., :3].max(axis=2)
    if mask.ndim != 2:
        raise GraftInputError(f"{name} must be an (H, W) mask, got shape {mask.shape}")
    if mask.shape != tuple(image_shape[:2]):
        raise GraftInputError(
            f"{name} is {mask.shape[1]}x{mask.shape[0]} (W x H) but {image_name} is "
            f"{image_shape[1]}x{image_shape[0]}; expected a mask of the same size as {image_name}"
        )
    scale = 255.0 if mask.dtype == np.uint8 else 1.0
    on = mask.astype(np.float32) / scale > 0.5
    if not on.any():
        raise GraftInputError(f"{name} is empty (no pixel above 0.5); expected the defect region marked in white")
    return on


@dataclass
class GraftInputs:
    """Reference defect image + mask, normal image + target mask, all at one working size, checked."""

    reference: np.ndarray
    reference_mask: np.ndarray
    normal: np.ndarray
    target_mask: np.ndarray

    @classmethod
    def checked(
        cls, reference, reference_mask, normal, target_mask, size: tuple[int, int] | None = None
    ) -> GraftInputs:
        """Check every input; ``size`` (height, width): resize the images (area/linear) and masks (nearest)."""
        reference = as_float_image(np.asarray(reference), "reference image")
        normal = as_float_image(np.asarray(normal), "normal image")
        ref_mask = check_mask(reference_mask, "reference mask", reference.shape, "the reference image")
        tgt_mask = check_mask(target_mask, "target mask", normal.shape, "the normal image")
        height, width = size if size is not None else normal.shape[:2]
        reference, normal = resize(reference, height, width), resize(normal, height, width)
        ref_mask, tgt_mask = (_resize_mask(m, height, width) for m in (ref_mask, tgt_mask))
        for name, m in (("reference mask", ref_mask), ("target mask", tgt_mask)):
            if not m.any():
                raise GraftInputError(f"{name} vanishes at the working size {width}x{height}; draw a larger region")
        return cls(reference, ref_mask, normal, tgt_mask)


def _resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    if mask.shape == (height, width):
        return mask
    return cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0


def tighten(
    image: np.ndarray, normal: np.ndarray, target: np.ndarray, threshold: float | None = TIGHTEN_THRESHOLD
) -> np.ndarray:
    """The mask of a graft result: ``target AND max over RGB |image - normal| > threshold`` (images in [0, 1]).

    ``threshold=None`` turns tightening off: the target mask itself.
    """
    target = np.asarray(target) > 0.5
    if threshold is None:
        return target
    changed = np.abs(np.asarray(image, np.float32) - np.asarray(normal, np.float32)).max(axis=2) > threshold
    return target & changed
