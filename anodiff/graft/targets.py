"""Where the grafted defect goes on a normal photo: a painted mask, the reference mask moved/scaled/rotated onto
the object, or a random region on the object (the existing region code, ``anodiff.regions``)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..common.imageio import read_mask, resize
from ..generate.sources import PhotoSource

PLACES = ("masks", "reference", "random")


def reference_on_object(
    reference_mask: np.ndarray,
    foreground: np.ndarray,
    seed: int,
    scale: tuple[float, float] = (0.8, 1.25),
    tries: int = 64,
) -> np.ndarray:
    """The reference mask's shape cut to its box, scaled by the photo/reference size ratio times a random factor in
    ``scale``, rotated by a random angle and put at a random place where it lies on ``foreground`` (the try with
    the most of it on the object when none lies wholly on it)."""
    ref = np.asarray(reference_mask) > 0.5
    fg = np.asarray(foreground) > 0.5
    if not ref.any():
        raise ValueError("reference mask is empty; expected the defect region marked in white")
    rng = np.random.default_rng(seed)
    ys, xs = np.nonzero(ref)
    patch = ref[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1].astype(np.uint8)
    height, width = fg.shape
    ratio = min(height / ref.shape[0], width / ref.shape[1]) * rng.uniform(*scale)
    side = int(np.ceil(np.hypot(*patch.shape) * ratio)) + 2
    canvas = np.zeros((side, side), np.uint8)
    ph, pw = patch.shape
    scaled = cv2.resize(patch, (max(1, round(pw * ratio)), max(1, round(ph * ratio))), interpolation=cv2.INTER_NEAREST)
    oy, ox = (side - scaled.shape[0]) // 2, (side - scaled.shape[1]) // 2
    canvas[oy : oy + scaled.shape[0], ox : ox + scaled.shape[1]] = scaled
    turn = cv2.getRotationMatrix2D((side / 2, side / 2), rng.uniform(0, 360), 1.0)
    shape = cv2.warpAffine(canvas, turn, (side, side), flags=cv2.INTER_NEAREST) > 0
    if not shape.any() or side > min(height, width):
        raise ValueError(f"the reference mask does not fit the {width}x{height} photo at this scale")
    best, best_on = None, -1.0
    for _ in range(tries):
        y, x = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
        placed = np.zeros_like(fg)
        placed[y : y + side, x : x + side] = shape
        on = float((placed & fg).sum()) / float(placed.sum())
        if on > best_on:
            best, best_on = placed, on
        if on >= 1.0:
            break
    return best


def mask_for_photo(folder: Path, photo: Path) -> Path:
    """The painted target mask of ``photo``: ``<folder>/<stem>.png`` or ``<stem>_mask.png``."""
    for name in (f"{photo.stem}.png", f"{photo.stem}_mask.png"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"--masks {folder}: no target mask for {photo.name}; expected {photo.stem}.png or "
        f"{photo.stem}_mask.png (white where the defect goes)"
    )


class TargetMasks:
    """The target mask of pair ``i`` on photo ``source.photo(i)`` (bool, the photo's size)."""

    def __init__(
        self,
        place: str,
        source: PhotoSource,
        masks: str | os.PathLike | None,
        seed: int,
        region_size: tuple[float, float] = (0.05, 0.2),
        feather: int = 4,
    ) -> None:
        if place not in PLACES:
            raise ValueError(f"--place must be one of {', '.join(PLACES)}, got {place!r}")
        if (place == "masks") != (masks is not None):
            raise ValueError("give --masks DIR exactly when placing by painted masks (--place masks)")
        self.place, self.source, self.seed = place, source, seed
        self.masks = Path(masks) if masks is not None else None
        if self.masks is not None:
            if not self.masks.is_dir():
                raise FileNotFoundError(f"--masks {self.masks}: not a folder")
            for f in source.files:
                mask_for_photo(self.masks, f)
        self.region_size, self.feather = region_size, feather

    def __call__(self, pair: int, reference_mask: np.ndarray) -> np.ndarray:
        photo = self.source.photo(pair)
        if self.place == "masks":
            path = mask_for_photo(self.masks, self.source.file_for(pair))
            mask = resize(read_mask(path), *photo.shape[:2], enlarge=cv2.INTER_NEAREST) > 0.5
            if not mask.any():
                raise ValueError(f"{path}: the target mask is empty; paint where the defect goes in white")
            return mask
        if self.place == "reference":
            return reference_on_object(reference_mask, self.source.foreground(pair), self.seed + pair)
        from ..regions.multi_defect import sample_disjoint

        return (
            sample_disjoint(self.source.foreground(pair), 1, self.region_size, (self.seed, pair), feather=self.feather)[
                0
            ]
            > 0.5
        )
