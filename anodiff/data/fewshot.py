"""Few-shot training data: find the (image, mask) pairs, pick the training split and check them.

Two layouts (``find_samples``): an MVTec AD root (``<root>/<category>/test/<anomaly>/*.png`` with masks
``<root>/<category>/ground_truth/<anomaly>/<stem>_mask.png``; normal images in ``train/good``), or a plain folder
``<dir>/images/*`` + ``<dir>/masks/*`` sharing stems. One model is trained per (category, anomaly type)
(dualanodiff-reference.md §6). ``training_set.FewShotDataset`` turns the pairs into the branch targets; it is
still importable from here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..common.imageio import IMAGE_EXTENSIONS, DataError, images_in, is_image, read_image, read_mask
from .objects import CACHE_FOLDER, background_image, blackened_background, object_mask, object_mask_path

log = logging.getLogger(__name__)

SPLIT_RULES = ("floor", "authors")
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


def find_samples(root: str | os.PathLike, category: str | None = None, anomaly: str | None = None) -> list[Sample]:
    """All (image, mask) pairs of one anomaly type, sorted by image file name.

    The layout is detected (``anodiff.layouts``): a plain folder when ``<root>/images`` exists (masks in
    ``<root>/masks``, same stem, or ``<stem>_mask``); otherwise an MVTec AD / MPDD / BTAD or VisA root, which needs
    ``category`` and ``anomaly``. Missing masks are not an error here: ``validate_samples`` reports them with the
    path it expected.
    """
    from .layouts import detect_layout  # layouts builds on this module

    layout = detect_layout(root)
    log.info("data: %s", layout.describe())
    return layout.samples(category, anomaly)


def list_jobs(root: str | os.PathLike) -> list[tuple[str, str]]:
    """Every ``(category, anomaly type)`` of a dataset root (any ``anodiff.layouts`` layout but plain), normal
    folders skipped, sorted: one model each."""
    from .layouts import detect_layout

    return detect_layout(root).jobs()


def normal_images(root: str | os.PathLike, category: str) -> list[Path]:
    """The defect-free training images (MVTec's ``<root>/<category>/train/good``; see ``anodiff.layouts``), sorted:
    BCM backgrounds at generation time."""
    from .layouts import detect_layout

    return detect_layout(root).normals(category, "train")


def split_train(samples: Sequence[Sample], rule: str = "floor") -> list[Sample]:
    """The training subset: the first n samples in file-name order, the rest being held out for evaluation.

    ``rule="floor"`` (default, the evaluation's convention, §12.4): n = ⌊len/3⌋; len=12 → 4, 10 → 3, 8 → 2.
    ``rule="authors"`` (the official dual trainer): n = ⌊len/3⌋, +1 if that n is not divisible by 3;
    len=12 → 5, 10 → 3, 8 → 3. It overlaps the evaluation's test images by up to one.
    Both take at least one sample when there is any, so tiny folders still train.
    """
    if rule not in SPLIT_RULES:
        raise ValueError(f"unknown split rule {rule!r}; use one of {', '.join(SPLIT_RULES)}")
    ordered = sorted(samples, key=lambda s: (s.image.name, str(s.image)))
    n = len(ordered) // 3
    if rule == "authors" and n % 3 != 0:
        n += 1
    if ordered:
        n = max(n, 1)
    return ordered[:n]


def _load_pair(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """The image and mask of a sample, or a ``DataError`` naming the file and what was expected."""
    if not sample.image.is_file():
        raise DataError(f"image {sample.image} does not exist")
    image = read_image(sample.image)
    if not sample.mask.is_file():
        raise DataError(f"no mask for image {sample.image}: expected {sample.mask}")
    mask = read_mask(sample.mask)
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
            "binarises to nothing; if it is a 0/1 label map, save it as 0/255"
        )


def validate_samples(samples: Sequence[Sample], strict: bool = True) -> list[Sample]:
    """The usable samples. Every problem is collected; ``strict`` raises one ``DataError`` listing them all,
    otherwise each is logged and the sample dropped (a ``DataError`` still if none is left)."""
    if not samples:
        raise DataError("no training samples given")
    good, problems = [], []
    for sample in samples:
        try:
            _load_pair(sample)
        except DataError as err:
            problems.append(str(err))
        else:
            good.append(sample)
    if problems and (strict or not good):
        raise DataError(f"{len(problems)} of {len(samples)} samples are unusable:\n  " + "\n  ".join(problems))
    for problem in problems:
        log.warning("skipping a sample: %s", problem)
    return good


def describe(samples: Sequence[Sample]) -> str:
    """The exact files a run uses, one numbered line per sample (paths relative to their common folder), for
    ``anodiff train --dry-run``: a user must be able to check which images train and which stay held out."""
    if not samples:
        return "0 samples"
    paths = [p for s in samples for p in (s.image, s.mask)]
    root = Path(os.path.commonpath([str(p.parent) for p in paths]))

    def show(p: Path) -> str:
        return os.path.relpath(p, root) + ("" if p.is_file() else " [missing]")

    lines = [f"{len(samples)} sample{'s' if len(samples) != 1 else ''} under {root}:"]
    lines += [f"  {i:>3}. {show(s.image)}  mask {show(s.mask)}" for i, s in enumerate(samples, 1)]
    return "\n".join(lines)


def __getattr__(name: str) -> object:
    """``FewShotDataset`` lives in ``training_set`` now; ``from anodiff.data.fewshot import FewShotDataset`` still
    works (imported on first use: ``training_set`` builds on this module)."""
    if name == "FewShotDataset":
        from .training_set import FewShotDataset

        return FewShotDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CACHE_FOLDER", "IMAGE_EXTENSIONS", "SPLIT_RULES", "DataError", "Sample", "background_image",
    "blackened_background", "describe", "find_samples", "list_jobs", "normal_images", "object_mask",
    "object_mask_path", "read_image", "read_mask", "split_train", "validate_samples",
]  # fmt: skip
