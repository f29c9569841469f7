"""A synthetic few-shot set for the offline demo: brick textures with near-black defects and exact masks.

No industrial data set ships offline, so the demo paints its own. Everything is numpy + OpenCV and fully determined
by a seed. The texture never gets darker than ``TEXTURE_MIN_LUMA`` and the defects never lighter than
``DEFECT_MAX_LUMA``, so "luminance below ``DARK_LUMA``" recovers a defect exactly: in the training images (a test
checks it) and, approximately, in the generated global images, where it is the demo's defect detector.

Images are ``(H, W, 3)`` float32 RGB in [0, 1]; masks ``(H, W)`` bool. The anomaly-branch target is the image
inside the mask on a mid-grey canvas (0.5 here, 0 in the diffusion model's [-1, 1] space), as in
``anodiff.data.FewShotDataset``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..data.masks import CANVAS

KINDS = ("scratch", "blob", "crack")
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as OpenCV's RGB->grey
TEXTURE_MIN_LUMA = 0.32
DEFECT_MAX_LUMA = 0.12
DARK_LUMA = 0.22
"""Luminance threshold between texture and defect; the demo's rule for "this pixel of a global image is a defect"."""

BRICK = np.array([0.62, 0.36, 0.27], dtype=np.float32)
MORTAR = np.array([0.80, 0.78, 0.73], dtype=np.float32)


@dataclass(frozen=True)
class FewShotSet:
    """N (image, mask) pairs plus the kind of each defect. images: (N, H, W, 3) in [0, 1]; masks: (N, H, W) bool."""

    images: np.ndarray
    masks: np.ndarray
    kinds: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def parts(self) -> np.ndarray:
        """(N, H, W, 3): the anomaly-branch targets, the defect alone on the grey canvas."""
        return np.stack([anomaly_part(i, m) for i, m in zip(self.images, self.masks)])


def luminance(image: np.ndarray) -> np.ndarray:
    """(..., H, W, 3) RGB in [0, 1] -> (..., H, W) luminance."""
    return image @ LUMA


def brick_texture(size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size, 3) running-bond brick wall: light mortar lines, per-brick tint, pixel noise, random phase.

    Bricks are 12 x 6 px (mortar included), so a 24 px image shows 2 bricks across and 4 courses; the phase
    moves with ``rng`` so no two images are the same crop.
    """
    brick_w, brick_h = 12, 6
    oy, ox = rng.integers(0, brick_h), rng.integers(0, brick_w)
    yy, xx = np.mgrid[0:size, 0:size]
    row = (yy + oy) // brick_h
    shifted = xx + ox + (row % 2) * (brick_w // 2)
    col = shifted // brick_w
    mortar = ((yy + oy) % brick_h == 0) | (shifted % brick_w == 0)
    tint = rng.normal(0.0, 0.05, size=(int(row.max()) + 1, int(col.max()) + 1, 1)).astype(np.float32)
    image = np.where(mortar[..., None], MORTAR, BRICK + tint[row, col]).astype(np.float32)
    image += rng.normal(0.0, 0.035, size=image.shape).astype(np.float32)
    image = np.clip(image, 0.0, 1.0)
    # Lift any pixel the noise pushed too dark, so darkness stays the defect's signature alone.
    luma = luminance(image)[..., None]
    lift = np.clip(TEXTURE_MIN_LUMA - luma, 0.0, None)
    return np.clip(image + lift, 0.0, 1.0)


def _point(size: int, rng: np.random.Generator, margin: int) -> np.ndarray:
    return rng.integers(margin, size - margin, size=2)


def _polyline(
    start: np.ndarray, steps: int, step_len: tuple[float, float], turn: float, rng: np.random.Generator
) -> np.ndarray:
    """Points of a random walk with a persistent heading: a scratch or crack path."""
    angle = rng.uniform(0.0, 2 * np.pi)
    points = [start.astype(np.float64)]
    for _ in range(steps):
        angle += rng.normal(0.0, turn)
        length = rng.uniform(*step_len)
        points.append(points[-1] + length * np.array([np.cos(angle), np.sin(angle)]))
    return np.round(np.stack(points)).astype(np.int32)


def draw_defect(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size) bool mask of one defect of ``kind`` at a random position, size and orientation.

    scratch: a 2 px thick polyline of 2-3 segments; blob: a filled ellipse with a wobbly outline; crack: a 1 px
    polyline with one side branch. Drawn without anti-aliasing, so the mask is exactly the painted pixels.
    """
    mask = np.zeros((size, size), np.uint8)
    if kind == "scratch":
        path = _polyline(_point(size, rng, 5), int(rng.integers(2, 4)), (3.0, 6.0), 0.35, rng)
        cv2.polylines(mask, [path], False, 1, thickness=2, lineType=cv2.LINE_8)
    elif kind == "blob":
        centre = _point(size, rng, 6)
        axes = rng.uniform(2.0, 4.5, size=2)
        theta = np.linspace(0.0, 2 * np.pi, 16, endpoint=False)
        radius = 1.0 + rng.normal(0.0, 0.12, size=theta.shape)
        rot = rng.uniform(0.0, np.pi)
        ex, ey = axes[0] * radius * np.cos(theta), axes[1] * radius * np.sin(theta)
        pts = np.stack([ex * np.cos(rot) - ey * np.sin(rot), ex * np.sin(rot) + ey * np.cos(rot)], axis=1) + centre
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1, lineType=cv2.LINE_8)
    elif kind == "crack":
        path = _polyline(_point(size, rng, 5), int(rng.integers(3, 5)), (2.5, 4.5), 0.6, rng)
        cv2.polylines(mask, [path], False, 1, thickness=1, lineType=cv2.LINE_8)
        fork = path[int(rng.integers(1, len(path) - 1))]
        branch = _polyline(fork, 2, (2.0, 4.0), 0.5, rng)
        cv2.polylines(mask, [branch], False, 1, thickness=1, lineType=cv2.LINE_8)
    else:
        raise ValueError(f"unknown defect kind {kind!r}; use one of {', '.join(KINDS)}")
    return mask.astype(bool)


def paint_defect(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The image with the masked pixels replaced by near-black grime (luminance <= ``DEFECT_MAX_LUMA``)."""
    out = image.copy()
    level = rng.uniform(0.03, 0.07)
    grime = level + rng.uniform(-0.025, 0.025, size=(int(mask.sum()), 3)).astype(np.float32)
    out[mask] = np.clip(grime, 0.0, DEFECT_MAX_LUMA)
    return out


def anomaly_part(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, W, 3): ``image`` inside ``mask``, the grey canvas elsewhere (the anomaly branch's target)."""
    return np.where(mask[..., None], image, np.float32(CANVAS)).astype(np.float32)


def make_fewshot(n: int = 16, size: int = 24, seed: int = 0) -> FewShotSet:
    """``n`` anomaly images with masks; defect kinds cycle scratch, blob, crack. Same seed, same set.

    Masks smaller than 4 pixels (a path that left the image) are redrawn.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1 training pair, got {n}")
    if size < 16:
        raise ValueError(f"size must be >= 16 px so a defect fits, got {size}")
    rng = np.random.default_rng(seed)
    images, masks, kinds = [], [], []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        texture = brick_texture(size, rng)
        mask = draw_defect(kind, size, rng)
        while mask.sum() < 4:
            mask = draw_defect(kind, size, rng)
        images.append(paint_defect(texture, mask, rng))
        masks.append(mask)
        kinds.append(kind)
    return FewShotSet(np.stack(images), np.stack(masks), tuple(kinds))


def make_normals(n: int, size: int = 24, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) defect-free textures, for an MVTec-style ``train/good`` folder."""
    rng = np.random.default_rng(seed + 7919)
    return np.stack([brick_texture(size, rng) for _ in range(n)])
