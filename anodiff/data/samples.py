"""One training pair (``Sample``), the plain ``images/`` + ``masks/`` folder, and the rules every pair obeys.

The building blocks under ``fewshot`` (finding and splitting pairs), ``layouts`` (the dataset trees) and
``training_set`` (the items the trainer sees).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..common.imageio import DataError, images_in, is_image, read_image
from ..common.mask_rule import NONZERO, read_binary_mask, rule_for

GOOD = "good"


@dataclass(frozen=True)
class Sample:
    """One training pair: an anomaly image and its defect mask (which ``validate_samples`` checks exists)."""

    image: Path
    mask: Path


def _subdirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _plain_samples(root: Path) -> list[Sample]:
    """Pairs of ``images/`` and ``masks/``: same stem, or ``<stem>_mask``, any image extension; a missing mask
    becomes ``masks/<stem>.png`` for ``validate_samples`` to report."""
    by_stem: dict[str, list[Path]] = {}
    if (root / "masks").is_dir():
        for p in sorted((root / "masks").iterdir()):
            if is_image(p):
                by_stem.setdefault(p.stem, []).append(p)
    samples = []
    for image in images_in(root / "images"):
        found = by_stem.get(image.stem, []) + by_stem.get(f"{image.stem}_mask", [])
        if len(found) > 1:
            raise DataError(f"several masks match image {image}: {', '.join(map(str, found))}; keep one")
        samples.append(Sample(image, found[0] if found else root / "masks" / f"{image.stem}.png"))
    return samples


def _load_pair(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """The image and mask of a sample, or a ``DataError`` naming the file and what was expected."""
    if not sample.image.is_file():
        raise DataError(f"image {sample.image} does not exist")
    image = read_image(sample.image)
    if not sample.mask.is_file():
        raise DataError(f"no mask for image {sample.image}: expected {sample.mask}")
    rule = rule_for(sample.mask)  # the layout's rule (common.mask_rule)
    mask = read_binary_mask(sample.mask, rule).astype(np.float32)
    if not mask.any():
        raise DataError(
            f"mask {sample.mask} is all zero under the {rule!r} mask rule (defect: "
            f"{'any non-zero pixel' if rule == NONZERO else 'above 127 of 255, or the 1s of a 0/1 mask'}): "
            f"image {sample.image} has no anomaly pixels; save the mask as 0/255"
        )
    check_pair(image, mask, f"image {sample.image}", f"mask {sample.mask}")
    return image, mask


def check_pair(image: np.ndarray, mask: np.ndarray, image_label: str, mask_label: str) -> None:
    """The rules every training pair obeys, from a folder or from memory: a ``DataError`` naming the labels."""
    if mask.shape != image.shape[:2]:
        raise DataError(
            f"{mask_label} is {mask.shape[1]}x{mask.shape[0]} but {image_label} is "
            f"{image.shape[1]}x{image.shape[0]} (width x height); they must match"
        )
    if not mask.any():
        raise DataError(f"{mask_label} is all zero: {image_label} has no anomaly pixels")
    if not (mask > 0.5).any():
        raise DataError(
            f"{mask_label} has no pixel above half brightness (max {mask.max() * 255:.0f}/255), so it "
            "binarises to nothing; save it as 0/255"
        )
