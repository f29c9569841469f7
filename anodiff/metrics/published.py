"""The published numbers our report sits beside, and where each comparison holds (landscape.md §5, §7).

Each paper reports dataset-wide averages (over all categories); an ``anodiff eval`` of one category compares with them
only loosely, and ``anodiff eval --summary`` (every category's report.json averaged) is the like-for-like number.
Values are as the papers print them: IS and IC-LPIPS as is, AUROC/AP in percent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Published:
    """One method's published numbers on one dataset; a metric the paper does not give is absent."""

    method: str
    dataset: str
    source: str
    values: dict[str, float] = field(default_factory=dict)


PUBLISHED = (
    Published("DualAnoDiff", "MVTec AD", "paper (CVPR 2025)",
              {"inception_score": 1.93, "ic_lpips": 0.38, "pixel_auroc": 99.1, "pixel_ap": 84.5}),
    Published("AnomalyDiffusion", "MVTec AD", "paper (AAAI 2024); U-Net numbers quoted in its issue #97",
              {"inception_score": 1.80, "ic_lpips": 0.32, "image_auroc": 99.2, "image_ap": 99.7, "pixel_auroc": 99.1,
               "pixel_ap": 81.4}),
    Published("SeaS", "MVTec AD", "SeaS README (downstream with supervised segmenters, not the U-Net)",
              {"inception_score": 1.88, "ic_lpips": 0.34}),
    Published("SeaS", "VisA", "SeaS README", {"inception_score": 1.27, "ic_lpips": 0.26}),
)  # fmt: skip
"""DualAnoDiff and AnomalyDiffusion publish nothing on VisA, MPDD or BTAD (DualAnoDiff lists it as a limitation)."""

METRICS = (
    ("inception_score", "IS ↑", "{:.2f}", 1.0,
     ("Same computation (torch-fidelity, 10 splits, 2015-12-05 Inception) when the report's network line names "
      "`pt_inception-2015-12-05-6726825d.pth`. IS grows with the images per split: the papers used about 500 per "
      "type (they state 1,000); compare with a similar count.")),
    ("ic_lpips", "IC-LPIPS ↑", "{:.2f}", 1.0,
     ("AnomalyDiffusion/DualAnoDiff protocol (lpips 0.1.4 VGG, 256 px, at most 50 per cluster), seeded here, "
      "unseeded by the authors (a few 0.01 between runs). SeaS counts single-image clusters as 0: lower, not "
      "comparable.")),
    ("image_auroc", "image AUROC ↑", "{:.1f}", 100.0,
     ("DRAEM U-Net on generated pairs (`--localization`). The authors keep the checkpoint that scores best on the "
      "test set; we select on a validation set, so expect ours lower. SeaS uses other segmenters: not comparable.")),
    ("image_ap", "image AP ↑", "{:.1f}", 100.0, "As image AUROC."),
    ("pixel_auroc", "pixel AUROC ↑", "{:.1f}", 100.0, "As image AUROC."),
    ("pixel_ap", "pixel AP ↑", "{:.1f}", 100.0, "As image AUROC."),
)  # fmt: skip
"""(key, column title, format, our scale to the papers' units, where the comparison holds)."""

SPLIT_NOTE = (
    "Split: the evaluation holds out the last two thirds of each anomaly type (first floor(n/3) sorted files train). "
    "The authors' DualAnoDiff trainer rounds up (`--split authors`), so their generator saw up to one test image "
    "per type; `--split floor` (default) never does."
)


def published_for(dataset: str) -> list[Published]:
    """The rows for ``dataset`` (e.g. "MVTec AD", "VisA"); empty when no paper reports on it."""
    return [p for p in PUBLISHED if p.dataset == dataset]


def _cell(value: float | None, fmt: str) -> str:
    return "–" if value is None or not math.isfinite(value) else fmt.format(value)


def comparison_table(ours: dict[str, float], dataset: str, scope: str) -> list[str]:
    """Markdown lines: one table, a row per metric, our number (``scope`` says over what) beside each paper's, and
    the protocol difference that decides whether the two can be compared."""
    rows = published_for(dataset)
    lines = [f"## Beside the published numbers ({dataset})", ""]
    if not rows:
        return lines + [f"No paper reports numbers on {dataset}: there is nothing to compare with.", ""]
    head = ["metric", f"ours ({scope})"] + [p.method for p in rows] + ["comparable?"]
    lines += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for key, title, fmt, scale, note in METRICS:
        mine = ours.get(key)
        if mine is None and not any(key in p.values for p in rows):
            continue
        cells = [title, _cell(None if mine is None else mine * scale, fmt)]
        cells += [_cell(p.values.get(key), fmt) for p in rows]
        lines.append("| " + " | ".join(cells + [note]) + " |")
    lines += ["", SPLIT_NOTE, "", "Sources: " + "; ".join(f"{p.method}: {p.source}" for p in rows) + ".", ""]
    return lines


__all__ = ["METRICS", "PUBLISHED", "SPLIT_NOTE", "Published", "comparison_table", "published_for"]
