"""Few-shot training data: find the (image, mask) pairs, pick the training split, and serve the branch targets.

Two layouts (``find_samples``): an MVTec AD root (``<root>/<category>/test/<anomaly>/*.png`` with masks
``<root>/<category>/ground_truth/<anomaly>/<stem>_mask.png``; normal images in ``train/good``), or a plain folder
``<dir>/images/*`` + ``<dir>/masks/*`` sharing stems. One model is trained per (category, anomaly type)
(dualanodiff-reference.md §6). ``FewShotDataset`` yields the blend target (the image), the anomaly target (image ×
binary mask, so mid-grey outside the mask, §12.3) and, for BCM, the image with its salient object blacked out (§5.1),
all flipped together. Images are ``(H, W, 3)`` float32 RGB in [0, 1] until they become ``[-1, 1]`` tensors.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..common.imageio import IMAGE_EXTENSIONS, DataError, images_in, is_image, read_image, read_mask
from .masks import U2NetP
from .objects import CACHE_FOLDER, _object_mask, background_image, blackened_background, object_mask, object_mask_path

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


def _resize(x: np.ndarray, resolution: int) -> torch.Tensor:
    """``(C, R, R)`` from ``(H, W[, C])``: bilinear with antialiasing, as PIL's bilinear resize the authors use."""
    t = torch.from_numpy(np.ascontiguousarray(x)).float()
    t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
    if t.shape[-2:] != (resolution, resolution):
        t = F.interpolate(t[None], size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
        t = t[0]
    return t.clamp(0.0, 1.0)


def _check_settings(resolution: int, seed: int) -> None:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 8 or resolution % 8:
        raise ValueError(f"resolution must be a positive multiple of 8 pixels (the VAE's stride), got {resolution}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")


def _make_item(
    image: np.ndarray, mask: np.ndarray, background: np.ndarray | None, resolution: int, mask_label: str
) -> dict[str, torch.Tensor]:
    """One training item (see ``FewShotDataset``) from a checked pair at full size."""
    item = {"image": _resize(image, resolution) * 2.0 - 1.0}
    item["mask"] = (_resize(mask, resolution) > 0.5).float()
    if not item["mask"].any():
        log.warning("%s vanishes at %d px: the anomaly branch sees only grey", mask_label, resolution)
    item["anomaly"] = torch.where(item["mask"] > 0, item["image"], torch.zeros_like(item["image"]))
    if background is not None:
        item["background"] = _resize(background, resolution) * 2.0 - 1.0
    return item


class FewShotDataset(Dataset):
    """Training items for the two branches (and BCM), all decoded and resized once up front (a few images).

    Each item is a dict of float32 tensors: ``image`` (3, R, R) in [-1, 1] (blend target); ``mask`` (1, R, R) in
    {0, 1} (resized bilinearly, then > 0.5, as the authors); ``anomaly`` = image × mask, 0 (mid-grey) outside the
    mask (fg target, §6); and with ``background=True`` ``background`` (3, R, R), the object-blackened image.
    Non-square images are stretched to R×R. ``flips``: horizontal and vertical flips (p = 0.5 each) drawn once per
    item from ``(seed, epoch, index)`` and applied to every tensor alike; turn them off for orientation-sensitive
    objects (cable, transistor). Call ``set_epoch`` every epoch, or each image keeps the same flip for the whole run
    (with ``persistent_workers=True`` the DataLoader workers never see the new epoch).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        resolution: int = 512,
        flips: bool = True,
        background: bool = False,
        cache_dir: str | os.PathLike | None = None,
        seed: int = 0,
        model: U2NetP | None = None,
    ) -> None:
        _check_settings(resolution, seed)
        if not samples:
            raise DataError("no training samples given")
        self.samples = list(samples)
        self.resolution, self.flips, self.background, self.seed = resolution, flips, background, seed
        self.epoch = 0
        shared: list[U2NetP] = [model] if model is not None else []

        def get_model() -> U2NetP:
            if not shared:
                shared.append(U2NetP())
            return shared[0]

        self._items: list[dict[str, torch.Tensor]] = []
        for sample in self.samples:
            image, mask = _load_pair(sample)
            bg = blackened_background(image, _object_mask(sample.image, image, cache_dir, get_model)) if background else None
            self._items.append(_make_item(image, mask, bg, resolution, f"mask {sample.mask}"))
        log.info("loaded %d samples at %d px (flips %s, background %s)", len(self), resolution, flips, background)

    @classmethod
    def from_arrays(
        cls,
        images: Sequence[np.ndarray],
        masks: Sequence[np.ndarray],
        backgrounds: Sequence[np.ndarray] | None = None,
        resolution: int = 512,
        flips: bool = True,
        seed: int = 0,
    ) -> FewShotDataset:
        """Pairs held in memory (e.g. a ComfyUI IMAGE/MASK batch), under the folder's rules and item layout.

        images: ``(H, W, 3)`` float RGB in [0, 1]; masks: ``(H, W)`` in [0, 1]; backgrounds: the object-blackened
        images (BCM) or None. Errors name the item by its position (``image 2``).
        """
        if not len(images):
            raise DataError("no training samples given")
        if len(masks) != len(images):
            raise DataError(f"{len(images)} images but {len(masks)} masks: give one mask per image")
        if backgrounds is not None and len(backgrounds) != len(images):
            raise DataError(f"{len(images)} images but {len(backgrounds)} backgrounds: give one per image")
        _check_settings(resolution, seed)
        self = cls.__new__(cls)
        self.samples, self.epoch = [], 0
        self.resolution, self.flips, self.background, self.seed = resolution, flips, backgrounds is not None, seed
        self._items = []
        for i, (image, mask) in enumerate(zip(images, masks)):
            image, mask = np.asarray(image, np.float32), np.asarray(mask, np.float32)
            check_pair(image, mask, f"image {i}", f"mask {i}")
            bg = None if backgrounds is None else np.asarray(backgrounds[i], np.float32)
            self._items.append(_make_item(image, mask, bg, resolution, f"mask {i}"))
        return self

    def items(self) -> list[dict[str, torch.Tensor]]:
        """The decoded items without flips (what the Load Defect Set node shows)."""
        return [dict(item) for item in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def set_epoch(self, epoch: int) -> None:
        """Draw new flips: an item's flips depend on ``(seed, epoch, index)`` only, so runs are reproducible."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0, got {epoch!r}")
        self.epoch = epoch

    def flips_for(self, index: int) -> tuple[bool, bool]:
        """``(horizontal, vertical)`` flips item ``index`` gets in the current epoch."""
        if not self.flips:
            return False, False
        draw = np.random.default_rng([self.seed, self.epoch, index]).random(2)
        return bool(draw[0] < 0.5), bool(draw[1] < 0.5)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index %= len(self)
        horizontal, vertical = self.flips_for(index)
        dims = [d for d, on in ((-1, horizontal), (-2, vertical)) if on]
        return {k: torch.flip(v, dims) if dims else v.clone() for k, v in self._items[index].items()}


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
    "CACHE_FOLDER", "IMAGE_EXTENSIONS", "SPLIT_RULES", "DataError", "FewShotDataset", "Sample", "background_image",
    "blackened_background", "describe", "find_samples", "list_jobs", "normal_images", "object_mask",
    "object_mask_path", "read_image", "read_mask", "split_train", "validate_samples",
]  # fmt: skip
