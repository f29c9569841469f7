"""BCM backgrounds for ``anodiff generate``: the normal images to use, and each pair's blacked-out background."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from ..common.imageio import as_float_image, read_rgb, resize
from ..data.masks import U2NetP
from ..data.objects import blackened_background
from ..regions.stitch import Window, crop
from .sources import IMAGE_SUFFIXES, list_images


def normal_images(folder: Path, category: str | None = None) -> list[Path]:
    """BCM backgrounds, sorted by name (the authors' unsorted listing made runs irreproducible): the images of a
    folder, or, for a dataset root (MVTec AD, MPDD, BTAD, VisA: ``anodiff.data.layouts``), the defect-free training
    images of ``category``, chosen as training chooses them (VisA's split CSV included)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"normal images folder not found: {folder}")
    files = list_images(folder)
    if files:
        return files
    from ..data.fewshot import normal_images as dataset_normals

    try:
        return dataset_normals(folder, category)
    except (ValueError, FileNotFoundError) as exc:  # DataError is a ValueError
        raise FileNotFoundError(
            f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) to make backgrounds from, and not a dataset root "
            f"with normal images of category {category!r} ({exc})"
        ) from exc


def background_of(pair: int, every: int, count: int) -> int:
    """The background file of pair ``pair``: ``(pair // every) % count``, so a resumed run gives a pair the
    background it had."""
    return (pair // every) % count


def check_backgrounds(files: list[Path], pairs: Iterable[int], every: int) -> None:
    """Decode every background the pairs use (``background_of``) before SD1.5 loads: ``Backgrounds`` reads them
    lazily, so a bad file would otherwise abort the run hours in."""
    for k in sorted({background_of(i, every, len(files)) for i in pairs}):
        try:
            read_rgb(files[k])
        except (OSError, ValueError, cv2.error) as exc:
            raise ValueError(
                f"{files[k]}: a --normal-dir background that cannot be decoded ({exc}); expected an "
                "image file, remove or replace it"
            ) from exc


class Backgrounds:
    """BCM backgrounds: normal images with the salient object blacked out (soft, §5.1).

    Pair ``i`` gets image ``index_of(i)`` (``background_of(i, every, n)``): at the output size without region
    control, or with it windowed like the photo (``for_window``).
    """

    def __init__(self, files: list[Path], size: int, every: int, saliency: U2NetP) -> None:
        self.files, self.size, self.every, self.saliency = files, size, every, saliency
        self._cache: dict[tuple[int, int, int], np.ndarray] = {}

    def index_of(self, pair: int) -> int:
        return background_of(pair, self.every, len(self.files))

    def blackened(self, pair: int, height: int, width: int) -> np.ndarray:
        """``(height, width, 3)`` float32 in [0, 1]: pair ``pair``'s normal image resized, its object blacked out."""
        k = self.index_of(pair)
        if (k, height, width) not in self._cache:
            image = resize(as_float_image(read_rgb(self.files[k])), height, width)
            self._cache[k, height, width] = blackened_background(image, self.saliency.saliency(image))
        return self._cache[k, height, width]

    def for_pair(self, index: int) -> np.ndarray:
        """``(size, size, 3)`` float32 in [0, 1]: the background of pair ``index``."""
        return self.blackened(index, self.size, self.size)

    def for_window(self, pair: int, region: np.ndarray, window: Window) -> np.ndarray:
        """The background at the photo's size, cut out with the defect's crop window at the working size exactly
        as the photo is (``regions.stitch.crop``), so BCM sees the same part of the scene as the photo crop."""
        full = self.blackened(pair, window.photo_height, window.photo_width)
        return crop(full, region, window)[0]
