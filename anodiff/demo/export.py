"""What the demo writes: contact sheets (PNG) and an MVTec AD-style folder of the generated images and masks.

Layout under ``<out>/mvtec/synthetic/`` (the with-SAIM model's output; the category is called ``synthetic``):
``train/good/NNN.png`` defect-free textures, ``test/defect/NNN.png`` generated global images,
``ground_truth/defect/NNN_mask.png`` their anomaly-branch masks (0/255). The few-shot training pairs go to
``<out>/fewshot/images/NNN.png`` + ``<out>/fewshot/masks/NNN.png``, the plain layout ``anodiff train --data``
reads. All at the demo's native size (24 px); the sheets are enlarged with nearest neighbour.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ..common import imageio
from ..data.masks import overlay

CATEGORY = "synthetic"
DEFECT = "defect"
COLUMNS = ("global", "anomaly part", "mask", "overlay")
BACKGROUND = 255


def _uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an RGB (H, W, 3) or grey (H, W) image, float in [0, 1] (clipped) or uint8 or bool, as PNG (atomic,
    through ``common.imageio``); returns the path."""
    path = Path(path)
    data = image.astype(np.uint8) * 255 if image.dtype == bool else image if image.dtype == np.uint8 else _uint8(image)
    imageio.write_png(path, data)
    return path


def sheet_rows(globals_: np.ndarray, parts: np.ndarray, masks: np.ndarray) -> list[np.ndarray]:
    """One (H, 4W, 3) uint8 row per pair: global | anomaly part | mask | anomaly mask drawn over the global image.

    The overlay is the test of alignment by eye: the red should cover the dark defect exactly.
    """
    rows = []
    for g, p, m in zip(globals_, parts, masks):
        tiles = [g, p, np.repeat(m[..., None].astype(np.float32), 3, axis=2), overlay(g, m, alpha=0.55)]
        rows.append(np.concatenate([_uint8(t) for t in tiles], axis=1))
    return rows


def _label(width: int, text: str, height: int = 22) -> np.ndarray:
    band = np.full((height, width, 3), BACKGROUND, np.uint8)
    cv2.putText(band, text, (4, height - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return band


def contact_sheet(
    globals_: np.ndarray, parts: np.ndarray, masks: np.ndarray, title: str, scale: int = 4, gap: int = 2
) -> np.ndarray:
    """(H', W', 3) uint8 sheet: a title band, then one row per pair (``sheet_rows``) enlarged ``scale`` times."""
    rows = [
        cv2.resize(r, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        for r in sheet_rows(globals_, parts, masks)
    ]
    width = rows[0].shape[1]
    spacer = np.full((gap, width, 3), BACKGROUND, np.uint8)
    tile = width // len(COLUMNS)
    header = np.concatenate([_label(tile, name) for name in COLUMNS], axis=1)
    body = [x for r in rows for x in (r, spacer)]
    return np.concatenate([_label(width, title), header, *body], axis=0)


def side_by_side(sheets: Sequence[np.ndarray], gap: int = 12) -> np.ndarray:
    """Sheets next to each other, top-aligned, on a white background."""
    height = max(s.shape[0] for s in sheets)
    padded = []
    for i, s in enumerate(sheets):
        canvas = np.full((height, s.shape[1], 3), BACKGROUND, np.uint8)
        canvas[: s.shape[0]] = s
        padded.append(canvas)
        if i < len(sheets) - 1:
            padded.append(np.full((height, gap, 3), BACKGROUND, np.uint8))
    return np.concatenate(padded, axis=1)


def write_mvtec(root: str | os.PathLike, globals_: np.ndarray, masks: np.ndarray, normals: np.ndarray) -> Path:
    """Generated images and masks as ``<root>/synthetic/{train/good,test/defect,ground_truth/defect}``."""
    base = Path(root) / CATEGORY
    for i, image in enumerate(normals):
        write_png(base / "train" / "good" / f"{i:03d}.png", image)
    for i, (image, mask) in enumerate(zip(globals_, masks)):
        write_png(base / "test" / DEFECT / f"{i:03d}.png", image)
        write_png(base / "ground_truth" / DEFECT / f"{i:03d}_mask.png", mask)
    return base


def write_fewshot(root: str | os.PathLike, images: np.ndarray, masks: np.ndarray) -> Path:
    """The training pairs as ``<root>/images/NNN.png`` + ``<root>/masks/NNN.png``."""
    root = Path(root)
    for i, (image, mask) in enumerate(zip(images, masks)):
        write_png(root / "images" / f"{i:03d}.png", image)
        write_png(root / "masks" / f"{i:03d}.png", mask)
    return root
