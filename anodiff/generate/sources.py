"""Normal photos to put defects into: one file, or a folder of them cycled over the pairs.

Pair ``i`` takes photo ``i % n`` of the folder's images sorted by name, so a resumed run (or another shard) gives
a pair the photo it had; which photo that was is written to the pair's sidecar (``anodiff.dataset.sidecar``), and a run
whose folder no longer gives a pair the same photo is refused instead of mixing photos. Photos keep their own
size, aspect, channels and bit depth (crop-and-stitch works on them at full resolution, and the output keeps grey
or RGB, 8 or 16 bit).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_images(folder: Path) -> list[Path]:
    """The images of a folder (not recursive), sorted by name so every run cycles them in the same order; dot files
    are left out (macOS ``._x.png`` resource forks are not images). The one listing of photos and backgrounds."""
    return sorted(
        p
        for p in Path(folder).iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def image_files(folder: str | os.PathLike, what: str = "normal photos") -> list[Path]:
    """``list_images`` of a folder that must exist and hold images (errors name ``what``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {folder}")
    files = list_images(folder)
    if not files:
        raise FileNotFoundError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) among the {what}")
    return files


class PhotoSource:
    """Photo ``i % n`` for pair ``i``, read once and kept in a small cache (several pairs of a batch share one);
    ``foreground(i)`` is the photo's own object mask for random regions, computed once per photo."""

    def __init__(self, path: str | os.PathLike, cache: int = 8, saliency: Any = None, erode: int = 2) -> None:
        path = Path(path)
        if path.is_dir():
            self.files = image_files(path)
        elif path.is_file():
            self.files = [path]
        else:
            raise FileNotFoundError(f"--source: {path} is neither a photo nor a folder of photos")
        self.root = path if path.is_dir() else path.parent
        self.saliency, self.erode, self._size = saliency, erode, max(1, cache)
        self._photos: OrderedDict[int, np.ndarray] = OrderedDict()
        self._fg: OrderedDict[int, np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self.files)

    def index_for(self, pair: int) -> int:
        return pair % len(self.files)

    def file_for(self, pair: int) -> Path:
        return self.files[self.index_for(pair)]

    def name_for(self, pair: int) -> str:
        """The photo's name relative to the source folder (what the sidecar records)."""
        return self.file_for(pair).relative_to(self.root).as_posix()

    def photo(self, pair: int) -> np.ndarray:
        """The photo's pixels as its file stores them, at its own size: ``(H, W)`` grey or ``(H, W, 3)`` RGB, 8- or
        16-bit (``anodiff.common.pixels.read_pixels``), so the output keeps them outside the defects."""
        from ..common.pixels import read_pixels

        return _cached(self._photos, self.index_for(pair), self._size, lambda: read_pixels(self.file_for(pair)))

    def foreground(self, pair: int) -> np.ndarray:
        """``(H, W)`` bool: the object of pair ``i``'s photo (U²-Net-P by default), eroded a little."""
        from ..common.pixels import unit_rgb
        from ..regions import placement as regions

        def compute() -> np.ndarray:
            if self.saliency is None:  # one network for every photo, not one per photo
                try:
                    self.saliency = regions.U2NetP()
                except FileNotFoundError:
                    pass  # foreground_mask says what to fetch
            photo = unit_rgb(self.photo(pair), self.name_for(pair))
            return regions.foreground_mask(photo, model=self.saliency, erode=self.erode)

        return _cached(self._fg, self.index_for(pair), self._size, compute)


def _cached(cache: OrderedDict, key: int, size: int, make) -> np.ndarray:
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    cache[key] = value = make()
    while len(cache) > size:
        cache.popitem(last=False)
    return value


def load_folder(folder: str | os.PathLike, start: int = 0, limit: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """Photos ``start .. start+limit-1`` of a folder (``limit`` 0: all) as float32 RGB and their file names."""
    from ..common.imageio import read_image

    files = image_files(folder)
    if start < 0 or start >= len(files):
        raise ValueError(f"start must be in 0..{len(files) - 1} ({len(files)} images in {folder}), got {start}")
    chosen = files[start : start + limit] if limit > 0 else files[start:]
    return [read_image(p) for p in chosen], [p.name for p in chosen]


__all__ = ["IMAGE_SUFFIXES", "PhotoSource", "image_files", "list_images", "load_folder"]
