"""Several defects on one part: regions handled one after another on the same photo, each by its own model.

Each region is cut out with its own crop window (``regions.stitch``), generated, and stitched back before the next
one is cut, so a later defect sees the earlier ones. Regions may not overlap, nor come within the feather of one
another (the later paste would change the earlier defect): ``check_disjoint`` says which two do,
``sample_disjoint`` resamples random ones. The masks merge into one label mask, id ``k + 1`` for region ``k``, and
``defects_coco`` gives one COCO annotation per defect with its defect type as the category.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data.masks import grow_mask
from .stitch import Window, crop, crop_window, region_box, stitch

Generator = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]
"""``(photo crop at the working size, region crop, defect index) -> (generated crop, defect mask crop)``."""


def regions_from_labels(label: np.ndarray, name: str = "label image") -> list[np.ndarray]:
    """One ``(H, W)`` bool region per distinct non-zero id of an integer label image, in increasing id order."""
    label = np.asarray(label)
    if label.ndim == 3:
        if not (label == label[..., :1]).all():
            raise ValueError(f"{name} must be grey (one id per pixel), got a colour image")
        label = label[..., 0]
    if label.ndim != 2:
        raise ValueError(f"{name} must be an (H, W) image of region ids, got shape {label.shape}")
    ids = [int(v) for v in np.unique(label) if v != 0]
    if not ids:
        raise ValueError(f"{name} has no region: give each region its own non-zero id (0 is background)")
    return [label == v for v in ids]


def check_disjoint(regions: Sequence[np.ndarray], feather: int = 0) -> None:
    """Raise when two regions overlap or lie within ``feather`` px of each other (naming them, 1-based)."""
    masks = [np.asarray(r) > 0.5 for r in regions]
    for a in range(len(masks)):
        if masks[a].shape != masks[0].shape:
            raise ValueError(
                f"region {a + 1} is {masks[a].shape}, region 1 is {masks[0].shape}: give masks of one size"
            )
        grown = grow_mask(masks[a], feather) if feather else masks[a]
        for b in range(a + 1, len(masks)):
            if (grown & masks[b]).any():
                how = (
                    "overlap" if (masks[a] & masks[b]).any() else f"lie within the feather ({feather} px) of each other"
                )
                raise ValueError(
                    f"regions {a + 1} and {b + 1} {how}: separate them, or use one region for both defects"
                )


def sample_disjoint(
    foreground: np.ndarray, count: int, size: Sequence[float], seed: Sequence[int], feather: int = 0, **kwargs: Any
) -> list[np.ndarray]:
    """``count`` random regions on ``foreground``, each kept clear of the earlier ones (grown by ``2 * feather +
    1`` px); region 0 is exactly ``sample_regions(..., seed=seed)[0]``, region k is drawn from ``(*seed, k)``."""
    from . import placement as regions

    fg = np.asarray(foreground) > 0.5
    out: list[np.ndarray] = []
    for k in range(count):
        room = fg.copy()
        for earlier in out:
            room &= ~grow_mask(earlier, 2 * feather + 1)
        if not room.any():
            raise ValueError(
                f"no room left on the object for defect {k + 1} of {count}: lower --defects or --region-size"
            )
        key = tuple(seed) if k == 0 else (*seed, k)
        out.append(regions.sample_regions(room, 1, size=size, seed=key, **kwargs)[0])
    return out


def label_mask(masks: Sequence[np.ndarray]) -> np.ndarray:
    """``(H, W)`` uint8 label mask: ``k + 1`` where defect k's mask is (later defects win, though regions are
    disjoint so they never meet)."""
    if len(masks) > 255:
        raise ValueError(f"at most 255 defects per image fit an 8-bit label mask, got {len(masks)}")
    label = np.zeros(np.asarray(masks[0]).shape, np.uint8)
    for k, mask in enumerate(masks):
        label[np.asarray(mask) > 0.5] = k + 1
    return label


def defects_coco(label: np.ndarray, types: Sequence[str], file_name: str, supercategory: str = "object") -> dict:
    """A COCO instances dict for one image: one annotation per defect id present in ``label`` (whole defect, as
    one RLE), category = the defect's type (``types[id - 1]``); categories in order of first appearance."""
    from ..dataset.coco import coco_instances

    label = np.asarray(label)
    names = list(dict.fromkeys(types))
    coco = {
        "images": [{"id": 1, "file_name": file_name, "width": int(label.shape[1]), "height": int(label.shape[0])}],
        "annotations": [],
        "categories": [{"id": k + 1, "name": n, "supercategory": supercategory} for k, n in enumerate(names)],
    }
    for ident in range(1, len(types) + 1):
        for ann in coco_instances(label == ident, "mask"):
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": 1,
                    "iscrowd": 0,
                    "category_id": names.index(types[ident - 1]) + 1,
                    "defect_id": ident,
                    **ann,
                }
            )
    return coco


@dataclass
class Defects:
    """What ``add_defects`` made: the photo with every defect, the label mask, and per defect its box and window."""

    image: np.ndarray
    label: np.ndarray
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)


def add_defects(
    photo: np.ndarray,
    regions: Sequence[np.ndarray],
    generators: Sequence[Generator] | Generator,
    context: float = 2.0,
    working: int = 512,
    feather: int = 4,
    blend: str = "feather",
) -> Defects:
    """Put one defect into each region of ``photo`` (any size), one after another; ``generators`` holds one per
    region (a defect type per region) or one for all. Outside the regions grown by ``feather`` the image is the
    photo's own values."""
    regions = [np.asarray(r) > 0.5 for r in regions]
    if not regions:
        raise ValueError("regions: give at least one region")
    if callable(generators):
        generators = [generators] * len(regions)
    if len(generators) != len(regions):
        raise ValueError(
            f"generators: give one for all regions or one per region ({len(regions)}), got {len(generators)}"
        )
    for k, r in enumerate(regions):
        if r.shape != np.asarray(photo).shape[:2]:
            raise ValueError(
                f"region {k + 1} is {r.shape}, the photo {np.asarray(photo).shape[:2]}: give masks of the photo's size"
            )
    check_disjoint(regions, feather)
    image, masks, out = np.asarray(photo), [], Defects(np.asarray(photo), np.zeros(0, np.uint8))
    for k, (region, make) in enumerate(zip(regions, generators)):
        window = crop_window(region, context, working, name=f"region {k + 1}")
        photo_crop, region_crop = crop(image, region, window)
        generated, mask = make(photo_crop, region_crop, k)
        image, full = stitch(image, generated, region, window, mask=mask, feather=feather, blend=blend)
        masks.append(full)
        out.boxes.append(region_box(region))
        out.windows.append(window)
    out.image, out.label = image, label_mask(masks)
    return out


def pipeline_generator(
    pipe: Any, seed: int, mask_method: str = "u2netp", threshold: float = 0.5, **kwargs: Any
) -> Generator:
    """A ``Generator`` over a ``DualAnoDiffPipeline``: defect k uses ``seed + k``; its mask comes from the
    anomaly part (``anodiff.data.masks.extract_mask``)."""
    from ..data.masks import extract_mask

    def make(photo_crop: np.ndarray, region_crop: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        h, w = region_crop.shape
        pair = pipe(
            1, h, w, seed=[seed + k], source=photo_crop, region=region_crop, feather=None, progress=False, **kwargs
        )
        return pair.images[0], extract_mask(pair.anomaly_parts[0], mask_method, threshold)

    return make


__all__ = [
    "Defects",
    "add_defects",
    "check_disjoint",
    "defects_coco",
    "label_mask",
    "pipeline_generator",
    "regions_from_labels",
    "sample_disjoint",
]
