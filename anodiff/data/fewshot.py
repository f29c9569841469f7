"""Few-shot training data: find the (image, mask) pairs, pick the training split and check them.

Two layouts (``find_samples``): an MVTec AD root (``<root>/<category>/test/<anomaly>/*.png`` with masks
``<root>/<category>/ground_truth/<anomaly>/<stem>_mask.png``; normal images in ``train/good``), or a plain folder
``<dir>/images/*`` + ``<dir>/masks/*`` sharing stems. One model is trained per (category, anomaly type)
(dualanodiff-reference.md §6). ``training_set.FewShotDataset`` (importable from here too) turns the pairs into
the branch targets; ``samples`` holds the pair type and its checks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from ..common.imageio import IMAGE_EXTENSIONS, DataError, read_image, read_mask
from .layouts import detect_layout
from .objects import CACHE_FOLDER, background_image, blackened_background, object_mask, object_mask_path
from .samples import GOOD, Sample, _load_pair, check_pair
from .training_set import FewShotDataset

log = logging.getLogger(__name__)

SPLIT_RULES = ("floor", "authors")


def find_samples(root: str | os.PathLike, category: str | None = None, anomaly: str | None = None) -> list[Sample]:
    """All (image, mask) pairs of one anomaly type, sorted by image file name.

    The layout is detected (``anodiff.data.layouts``): a plain folder when ``<root>/images`` exists (masks in
    ``<root>/masks``, same stem, or ``<stem>_mask``); otherwise an MVTec AD / MPDD / BTAD or VisA root, which needs
    ``category`` and ``anomaly``. Missing masks are not an error here: ``validate_samples`` reports them with the
    path it expected.
    """
    layout = detect_layout(root)
    log.info("data: %s", layout.describe())
    return layout.samples(category, anomaly)


def list_jobs(root: str | os.PathLike) -> list[tuple[str, str]]:
    """Every ``(category, anomaly type)`` of a dataset root (any ``anodiff.data.layouts`` layout but plain), normal
    folders skipped, sorted: one model each."""
    return detect_layout(root).jobs()


def normal_images(root: str | os.PathLike, category: str) -> list[Path]:
    """The defect-free training images (MVTec's ``<root>/<category>/train/good``; see ``anodiff.data.layouts``), sorted:
    BCM backgrounds at generation time."""
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


__all__ = [
    "CACHE_FOLDER",
    "GOOD",
    "IMAGE_EXTENSIONS",
    "SPLIT_RULES",
    "DataError",
    "FewShotDataset",
    "Sample",
    "background_image",
    "blackened_background",
    "check_pair",
    "describe",
    "find_samples",
    "list_jobs",
    "normal_images",
    "object_mask",
    "object_mask_path",
    "read_image",
    "read_mask",
    "split_train",
    "validate_samples",
]
