"""The loss curve of a training run as an RGB picture (Pillow, which ComfyUI ships), for the Loss Graph node."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def smooth(losses: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over ``window`` steps (the raw few-shot loss jumps with the drawn timesteps)."""
    x = np.asarray(losses, dtype=np.float64)
    if window <= 1 or len(x) < 2:
        return x
    c = np.cumsum(np.insert(x, 0, 0.0))
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def loss_picture(losses: Sequence[float], width: int = 768, height: int = 384, first_step: int = 0) -> np.ndarray:
    """(height, width, 3) uint8: raw loss in light grey, its trailing mean in blue, axes labelled with steps
    ``first_step + 1 .. first_step + len(losses)`` and the loss range."""
    from PIL import Image, ImageDraw

    if not len(losses):
        raise ValueError("loss: no steps to plot (train at least one step)")
    raw = np.asarray(losses, dtype=np.float64)
    if not np.isfinite(raw).all():
        raise ValueError(f"loss: step {first_step + int(np.argmin(np.isfinite(raw))) + 1} is not finite")
    mean = smooth(raw, max(1, len(raw) // 20))
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 60, width - 15, 15, height - 35
    low, high = float(raw.min()), float(raw.max())
    span = high - low or max(abs(high), 1e-8)

    def points(y: np.ndarray) -> list[tuple[float, float]]:
        xs = np.linspace(left, right, len(y)) if len(y) > 1 else np.array([(left + right) / 2])
        ys = bottom - (y - low) / span * (bottom - top)
        return list(zip(xs.tolist(), ys.tolist()))

    draw.rectangle((left, top, right, bottom), outline="black")
    for y, colour, w in ((raw, (190, 190, 190), 1), (mean, (31, 119, 180), 2)):
        pts = points(y)
        if len(pts) > 1:
            draw.line(pts, fill=colour, width=w)
        else:
            draw.ellipse((pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2), fill=colour)
    draw.text((4, top), f"{high:.4g}", fill="black")
    draw.text((4, bottom - 10), f"{low:.4g}", fill="black")
    draw.text((left, bottom + 8), f"step {first_step + 1}", fill="black")
    end = f"step {first_step + len(raw)}"
    draw.text((right - 7 * len(end), bottom + 8), end, fill="black")
    draw.text(((left + right) // 2 - 60, bottom + 8), f"last mean {mean[-1]:.4g}", fill=(31, 119, 180))
    return np.asarray(image)
