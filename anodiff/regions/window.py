"""Crop windows for crop-and-stitch (``stitch.py``): where in a photo of any size the context window around a
region lies (the region's bounding box times ``context`` per axis, clamped to the photo) and the working size,
a multiple of 64 near SD1.5's resolution keeping the window's aspect, it is resized to. No torch, no ComfyUI."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

log = logging.getLogger(__name__)

MULTIPLE = 64
"""Working sides are multiples of this: 8 latent pixels, SD1.5's deepest level (scaled down for tiny working sizes)."""
MAX_UPSCALE = 4.0
"""A small region's window is enlarged at most this much (more context instead of a blurry 8x crop)."""


@dataclass(frozen=True)
class Window:
    """Where a crop came from: ``x, y, width, height`` in photo pixels, the working size it was resized to, and
    the photo's size (so a STITCH object or a sidecar alone is enough to paste back or regenerate)."""

    x: int
    y: int
    width: int
    height: int
    work_width: int
    work_height: int
    photo_width: int
    photo_height: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.width, self.height

    @property
    def work_shape(self) -> tuple[int, int]:
        """``(height, width)`` at the working resolution."""
        return self.work_height, self.work_width

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Window:
        try:
            return cls(**{k: int(data[k]) for k in cls.__dataclass_fields__})
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"not a crop window record ({exc}); expected keys {', '.join(cls.__dataclass_fields__)}"
            ) from exc


def region_box(region: np.ndarray, name: str = "region") -> tuple[int, int, int, int]:
    """``(x, y, width, height)`` of the region's bounding box; an empty region is an error."""
    mask = np.asarray(region)
    if mask.ndim != 2:
        raise ValueError(f"{name} must be an (H, W) mask, got shape {mask.shape}")
    points = cv2.findNonZero((mask > 0.5).astype(np.uint8))
    if points is None:
        raise ValueError(f"{name} is empty: paint where the defect may go in white")
    x, y, w, h = cv2.boundingRect(points)
    return int(x), int(y), int(w), int(h)


def _place(start: int, side: int, box: int, extent: int) -> int:
    """The window's first pixel: centred on the box, then shifted to stay inside the photo."""
    centred = start + box // 2 - side // 2
    return int(min(max(centred, 0), extent - side))


def _scale(
    box: tuple[int, int], need: tuple[float, float], photo: tuple[int, int], working: int, limits: tuple[int, int, int]
) -> float:
    """Working pixels per photo pixel: the context window's longer side at ``working`` and a photo's short side at
    least ``min_side`` (each enlarging at most ``MAX_UPSCALE`` times), raised until the region's short side reaches
    ``min_defect``, lowered until the region's long side fits ``max_side``."""
    min_side, min_defect, max_side = limits
    s = min(max(working / max(need), min_side / min(photo)), MAX_UPSCALE)
    s = max(s, min_defect / min(box))
    return min(s, max_side / max(box))


def crop_window(
    region: np.ndarray,
    context: float = 2.0,
    working: int = 512,
    multiple: int = MULTIPLE,
    name: str = "region",
    min_side: int | None = None,
    min_defect: int | None = None,
    max_side: int | None = None,
) -> Window:
    """The window to generate the region's pair in, shaped like the region.

    Per axis, the window is ``context`` times the region box's side (so a long scratch gets a long window, not a
    square), at a scale that puts the window's longer side at ``working`` pixels but enlarges the photo at most
    ``MAX_UPSCALE`` times, shows the region's short side with at least ``min_defect`` working pixels (default
    ``working / 16``: 4 latent pixels at 512), and keeps the region within ``max_side`` (default ``3 * working``).
    Each working side is at least ``min_side`` (default ``working / 2``; more context, not a stretched crop), the
    longer one at least ``working``, and a multiple of ``multiple`` pixels (64: 8 latent pixels of SD1.5; below a
    working size of 512, ``working / 8``); the photo window has the same aspect up to that rounding, clamped to
    the photo. A warning names the region (``name``) when its defect would still be under ``min_defect``."""
    if not (isinstance(context, (int, float)) and not isinstance(context, bool) and context >= 1.0):
        raise ValueError(f"context must be a number >= 1 (the window is the region's box times it), got {context!r}")
    if isinstance(working, bool) or not isinstance(working, int) or working < 8 or working % 8:
        raise ValueError(f"working size must be a positive multiple of 8, got {working!r}")
    height, width = np.asarray(region).shape[:2]
    x, y, w, h = region_box(region, name)
    step = min(multiple, max(8, working // 8))
    limits = (
        working // 2 if min_side is None else min_side,
        max(1, working // 16) if min_defect is None else min_defect,
        3 * working if max_side is None else max_side,
    )
    need = (min(w * float(context), width), min(h * float(context), height))  # no more context than the photo has
    s = _scale((w, h), need, (width, height), working, limits)
    sides, works = [], []
    for extent, box, wanted in ((width, w, need[0]), (height, h, need[1])):
        target = max(wanted * s, limits[0], working if wanted == max(need) else 0)
        target = max(min(target, limits[2]), box * s)
        side = min(max(box, round(math.ceil(target / step) * step / s)), extent)
        sides.append(side)
        works.append(max(step, round(side * s / step) * step))
    defect = min(w * works[0] / sides[0], h * works[1] / sides[1])
    if defect < limits[1]:
        log.warning(
            "%s: the defect would be %.1f px (%.1f latent px) across at the working size, under the minimum "
            "%d px; split it into shorter regions, draw it thicker, or raise the working size",
            name,
            defect,
            defect / 8,
            limits[1],
        )
    return Window(
        _place(x, sides[0], w, width),
        _place(y, sides[1], h, height),
        sides[0],
        sides[1],
        works[0],
        works[1],
        width,
        height,
    )


def shared_windows(
    regions: list[np.ndarray], context: float = 2.0, working: int = 512, names: list[str] | None = None
) -> list[Window]:
    """One window per region (all of one photo size) with one working shape, for a batch that must share it: each
    region's own window when those agree, else windows around boxes of the largest width and height, each centred
    on its region's box and kept inside the photo (same box, same photo size: same window shape)."""
    names = names or [f"region {k + 1}" for k in range(len(regions))]
    windows = [crop_window(r, context, working, name=n) for r, n in zip(regions, names)]
    if len({w.work_shape for w in windows}) <= 1:
        return windows
    boxes = [region_box(r, n) for r, n in zip(regions, names)]
    bw, bh = max(b[2] for b in boxes), max(b[3] for b in boxes)
    out = []
    for region, (x, y, w, h), name in zip(regions, boxes, names):
        height, width = np.asarray(region).shape[:2]
        common = np.zeros((height, width), bool)
        left, top = _place(x, bw, w, width), _place(y, bh, h, height)
        common[top : top + bh, left : left + bw] = True
        out.append(crop_window(common, context, working, name=name))
    return out
