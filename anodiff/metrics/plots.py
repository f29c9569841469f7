"""Report figures: one bar chart panel per metric, bars per anomaly type. matplotlib is optional.

Without matplotlib the report is still written, with a note saying how to get the plots.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

PANELS = (
    ("alignment_iou", "chance_iou", "mask alignment IoU"),
    ("novelty_share", None, "novel masks (best IoU < 0.5)"),
    ("inception_score", None, "Inception Score (higher: sharper, more varied)"),
    ("kid_x1000", None, "KID x 1000 (lower: closer to real)"),
    ("fid", None, "FID (few real images: indicative only)"),
    ("ic_lpips", None, "IC-LPIPS (higher: more diverse)"),
)


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def bar_charts(rows: dict[str, dict[str, float]], path: Path, title: str) -> Path | None:
    """Save a PNG with one panel per metric that has a value for some type; None when nothing can be drawn."""
    if not matplotlib_available():
        log.warning("matplotlib is not installed: no plots (pip install matplotlib)")
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    kinds = sorted(rows)
    panels = [p for p in PANELS if any(_finite(rows[k].get(p[0])) for k in kinds)]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 1, 3.6), squeeze=False)
    x = np.arange(len(kinds))
    for ax, (key, ghost, label) in zip(axes[0], panels):
        values = [rows[k].get(key) if _finite(rows[k].get(key)) else 0.0 for k in kinds]
        if ghost:
            chance = [rows[k].get(ghost) if _finite(rows[k].get(ghost)) else 0.0 for k in kinds]
            ax.bar(x - 0.2, values, width=0.4, color="tab:blue", label="pairs")
            ax.bar(x + 0.2, chance, width=0.4, color="0.7", label="chance")
            ax.legend(fontsize=7)
        else:
            ax.bar(x, values, width=0.6, color="tab:blue")
        ax.set_xticks(x, kinds, rotation=45, ha="right", fontsize=8)
        ax.axhline(0.0, color="0.3", linewidth=0.6)
        ax.set_title(label, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def training_curve(history: list[dict[str, float]], path: Path) -> Path | None:
    """Loss and validation score per epoch of the localisation network."""
    if not history or not matplotlib_available():
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([h["epoch"] for h in history], [h["loss"] for h in history], label="focal loss")
    scored = [h for h in history if "validation_score" in h]
    twin = ax.twinx()
    twin.plot([h["epoch"] for h in scored], [h["validation_score"] for h in scored], color="tab:orange")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    twin.set_ylabel("validation score (sum of 4)", color="tab:orange")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


__all__ = ["bar_charts", "matplotlib_available", "training_curve"]
