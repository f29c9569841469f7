"""Render the README's crop-and-stitch figures from a synthetic 1600x1200 inspection photo.

No SD1.5 weights exist offline, so the defect is drawn by a stand-in generator (an OpenCV scratch at the working
size, where the dual model would sample); everything else is anodiff.regions.stitch as the CLI and nodes run it: the
window, its resize to 512 px, the paste back at full resolution, and the check that the photo is unchanged outside
the region grown by the feather. Usage: ``python scripts/stitch_figure.py [OUT_DIR]`` (default docs/).
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from anodiff.common.imageio import write_png
from anodiff.regions.stitch import crop, crop_window, grown_region, stitch

H, W, FEATHER = 1200, 1600, 4


def inspection_photo(seed: int = 0) -> np.ndarray:
    """A brushed-metal plate with four bolts and soft lighting, uint8 RGB."""
    rng = np.random.default_rng(seed)
    streaks = cv2.GaussianBlur(rng.normal(0, 1, (H, W)).astype(np.float32), (0, 0), sigmaX=25, sigmaY=0.8)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    light = 0.55 + 0.25 * np.exp(-(((xx - 0.35 * W) / (0.6 * W)) ** 2 + ((yy - 0.3 * H) / (0.7 * H)) ** 2))
    grey = np.clip(light + 0.05 * streaks / streaks.std(), 0, 1)
    photo = np.stack([grey * 0.96, grey * 0.98, grey], -1)
    for cx, cy in ((200, 180), (1400, 180), (200, 1020), (1400, 1020)):
        cv2.circle(photo, (cx, cy), 70, (0.25, 0.25, 0.27), -1, cv2.LINE_AA)
        cv2.circle(photo, (cx, cy), 52, (0.62, 0.62, 0.64), -1, cv2.LINE_AA)
        cv2.circle(photo, (cx - 12, cy - 12), 20, (0.85, 0.85, 0.86), -1, cv2.LINE_AA)
    return np.round(np.clip(photo, 0, 1) * 255).astype(np.uint8)


def stand_in_scratch(photo_crop: np.ndarray, region_crop: np.ndarray, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """A scratch inside the region at the working size: a dark groove with a bright rim, and its mask."""
    rng = np.random.default_rng(seed)
    ys, xs = np.nonzero(region_crop)
    y, x = float(ys.mean()), float(xs.mean())
    reach = 0.4 * min(ys.max() - ys.min(), xs.max() - xs.min())
    angle = rng.uniform(0, np.pi)
    points = []
    for t in np.linspace(-1, 1, 40):
        wobble = 6 * np.sin(3 * t + rng.uniform(0, 0.3))
        points.append(
            (
                x + t * reach * np.cos(angle) - wobble * np.sin(angle),
                y + t * reach * np.sin(angle) + wobble * np.cos(angle),
            )
        )
    line = np.round(np.array(points)).astype(np.int32)
    mask = np.zeros(region_crop.shape, np.uint8)
    cv2.polylines(mask, [line], False, 1, 9, cv2.LINE_AA)
    rim = np.zeros(region_crop.shape, np.float32)
    cv2.polylines(rim, [line + 4], False, 1.0, 4, cv2.LINE_AA)
    groove = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 2.0)
    out = photo_crop * (1 - 0.75 * groove[..., None]) + 0.25 * cv2.GaussianBlur(rim, (0, 0), 1.5)[..., None]
    return np.clip(out, 0, 1), (mask > 0) & region_crop


def zoom(image: np.ndarray) -> np.ndarray:
    return cv2.resize(image, (512, 512), interpolation=cv2.INTER_NEAREST)


def main(out_dir: Path) -> None:
    photo = inspection_photo()
    region = np.zeros((H, W), np.uint8)
    cv2.ellipse(region, (900, 640), (60, 60), 0, 0, 360, 1, -1)  # a 120 px region
    region = region > 0
    window = crop_window(region, context=2.0, working=512)
    photo_crop, region_crop = crop(photo, region, window)
    generated, mask = stand_in_scratch(photo_crop, region_crop)
    after, full_mask = stitch(photo, generated, region, window, mask=mask, feather=FEATHER)
    outside = ~grown_region(region, FEATHER)
    assert after[outside].tobytes() == photo[outside].tobytes()  # the figure shows what the tests assert
    pair = np.concatenate([photo, np.full((H, 16, 3), 255, np.uint8), after], axis=1)
    write_png(out_dir / "crop_and_stitch_full.png", pair)
    x, y, w, h = window.box
    boxed = after.copy()
    cv2.rectangle(boxed, (x, y), (x + w - 1, y + h - 1), (255, 200, 0), 3)
    diff = (np.abs(after.astype(int) - photo.astype(int)).max(axis=2) > 0).astype(np.uint8) * 255
    diff_rgb = np.stack([diff, diff // 3, diff // 3], -1)
    contours, _ = cv2.findContours((~outside).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(diff_rgb, contours, -1, (0, 255, 120), 2)
    work = np.round(generated * 255).astype(np.uint8)
    panels = [
        cv2.resize(boxed, (683, 512), interpolation=cv2.INTER_AREA),
        work,
        zoom(diff_rgb[y : y + h, x : x + w]),
        zoom(np.where(full_mask[..., None], 255, 0).astype(np.uint8).repeat(3, 2)[y : y + h, x : x + w]),
    ]
    gap = np.full((512, 12, 3), 255, np.uint8)
    strip = np.concatenate([p if i == 0 else np.concatenate([gap, p], 1) for i, p in enumerate(panels)], axis=1)
    write_png(out_dir / "crop_and_stitch_steps.png", strip)
    print(f"window {window.to_dict()}; changed pixels {int((diff > 0).sum())}, all inside the grown region")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "docs")
