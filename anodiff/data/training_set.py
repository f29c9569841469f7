"""The few-shot training set: decoded, resized (image, mask[, background]) items for both branches, flipped alike.

``FewShotDataset`` yields the blend target (the image), the anomaly target (image × binary mask, so mid-grey
outside the mask, dualanodiff-reference.md §12.3) and, for BCM, the image with its salient object blacked out
(§5.1), all flipped together. Images are ``(H, W, 3)`` float32 RGB in [0, 1] until they become ``[-1, 1]`` tensors.
The pairs come from ``fewshot`` (``find_samples``, ``split_train``, ``validate_samples``); ``samples`` checks them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..common.imageio import DataError
from .masks import U2NetP
from .objects import _object_mask, blackened_background
from .samples import Sample, _load_pair, check_pair

log = logging.getLogger(__name__)


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
            bg = (
                blackened_background(image, _object_mask(sample.image, image, cache_dir, get_model))
                if background
                else None
            )
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
