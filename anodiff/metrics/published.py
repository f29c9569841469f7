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
    """One method's published numbers on one dataset; a metric the paper does not give is absent.

    paper: the paper the method comes from; where: per metric, where the number was read; outside_paper: the
    metrics whose number was not found in the paper itself (read from a README, an issue or another paper)."""

    method: str
    dataset: str
    source: str
    values: dict[str, float] = field(default_factory=dict)
    paper: str = ""
    where: dict[str, str] = field(default_factory=dict)
    outside_paper: frozenset[str] = frozenset()


_DUAL = "DualAnoDiff, CVPR 2025 (arXiv 2408.13509)"
_ADIFF = "AnomalyDiffusion, AAAI 2024 (arXiv 2312.05767)"
_SEAS = "SeaS, ICCV 2025"
_O2MAG = "O2MAG (One-to-More), CVPR 2026 (arXiv 2603.18093)"
_ADIFF_97 = "the paper's U-Net table as quoted in sjtuplayer/anomalydiffusion issue #97"
PUBLISHED = (
    Published(
        "DualAnoDiff",
        "MVTec AD",
        "paper (CVPR 2025)",
        {"inception_score": 1.93, "ic_lpips": 0.38, "pixel_auroc": 99.1, "pixel_ap": 84.5},
        _DUAL,
        dict.fromkeys(
            ("inception_score", "ic_lpips", "pixel_auroc", "pixel_ap"),
            "the paper's MVTec AD averages as earlier anodiff notes give them; not checked against "
            "the paper's tables, which could not be read here",
        ),
        frozenset({"inception_score", "ic_lpips", "pixel_auroc", "pixel_ap"}),
    ),
    Published(
        "AnomalyDiffusion",
        "MVTec AD",
        "paper (AAAI 2024); U-Net numbers quoted in its issue #97",
        {
            "inception_score": 1.80,
            "ic_lpips": 0.32,
            "image_auroc": 99.2,
            "image_ap": 99.7,
            "pixel_auroc": 99.1,
            "pixel_ap": 81.4,
        },
        _ADIFF,
        {
            **dict.fromkeys(("inception_score", "ic_lpips"), "SeaS README's comparison table"),
            **dict.fromkeys(("image_auroc", "image_ap", "pixel_auroc", "pixel_ap"), _ADIFF_97),
        },
        frozenset({"inception_score", "ic_lpips", "image_auroc", "image_ap", "pixel_auroc", "pixel_ap"}),
    ),
    Published(
        "SeaS",
        "MVTec AD",
        "SeaS README (downstream with supervised segmenters, not the U-Net)",
        {"inception_score": 1.88, "ic_lpips": 0.34, "kid": 0.04},
        _SEAS,
        dict.fromkeys(("inception_score", "ic_lpips", "kid"), "SeaS README (HUST-SLOW/SeaS)"),
        frozenset({"inception_score", "ic_lpips", "kid"}),
    ),
    Published(
        "SeaS",
        "VisA",
        "SeaS README",
        {"inception_score": 1.27, "ic_lpips": 0.26},
        _SEAS,
        dict.fromkeys(("inception_score", "ic_lpips"), "SeaS README (HUST-SLOW/SeaS)"),
        frozenset({"inception_score", "ic_lpips"}),
    ),
    Published(
        "O2MAG",
        "MVTec AD",
        "paper (CVPR 2026), U-Net protocol (1000 generated + first real third)",
        {
            "ic_lpips": 0.30,
            "image_ap": 99.8,
            "pixel_auroc": 99.2,
            "pixel_ap": 86.3,
            "pixel_f1_max": 80.8,
            "classification_accuracy": 82.35,
        },
        _O2MAG,
        dict.fromkeys(
            ("ic_lpips", "image_ap", "pixel_auroc", "pixel_ap", "pixel_f1_max", "classification_accuracy"),
            "the paper's MVTec AD averages as the project's O2MAG notes (shared/docs/one-shot-reference.md) "
            "give them; table number not checked",
        ),
        frozenset({"ic_lpips", "image_ap", "pixel_auroc", "pixel_ap", "pixel_f1_max", "classification_accuracy"}),
    ),
)
"""DualAnoDiff and AnomalyDiffusion publish nothing on VisA, MPDD or BTAD (DualAnoDiff lists it as a limitation).
O2MAG reports KID and the U-Net and ResNet-34 protocol (its repository's ``eval/`` scripts); its numbers come from the
project's notes on the paper, not from a table read here, so each carries the mark. Its KID (45.55, DualAnoDiff 103.87
in the same table) is on a scale the notes do not state, so it is left out rather than set beside ours."""

METRICS = (
    (
        "inception_score",
        "IS ↑",
        "{:.2f}",
        1.0,
        (
            "Same computation (torch-fidelity, 10 splits, 2015-12-05 Inception) when the report's network line names "
            "`pt_inception-2015-12-05-6726825d.pth`. IS grows with the images per split: the papers used about 500 per "
            "type (they state 1,000); compare with a similar count."
        ),
    ),
    (
        "ic_lpips",
        "IC-LPIPS ↑",
        "{:.2f}",
        1.0,
        (
            "AnomalyDiffusion/DualAnoDiff protocol (lpips 0.1.4 VGG, 256 px, at most 50 per cluster), seeded here, "
            "unseeded by the authors (a few 0.01 between runs). SeaS counts single-image clusters as 0: lower, not "
            "comparable."
        ),
    ),
    (
        "kid",
        "KID ↓",
        "{:.3f}",
        1.0,
        (
            "Unbiased MMD² of Inception pool3 features (torch-fidelity, cubic kernel) against the held-out real "
            "images of the type; SeaS's value is as its README prints it, against its own reference set."
        ),
    ),
    (
        "image_auroc",
        "image AUROC ↑",
        "{:.1f}",
        100.0,
        (
            "DRAEM U-Net on generated pairs (`--localization`). The authors keep the checkpoint that scores best on "
            "the test set; we select on a validation set, so expect ours lower. SeaS uses other segmenters: not "
            "comparable."
        ),
    ),
    ("image_ap", "image AP ↑", "{:.1f}", 100.0, "As image AUROC."),
    ("pixel_auroc", "pixel AUROC ↑", "{:.1f}", 100.0, "As image AUROC."),
    ("pixel_ap", "pixel AP ↑", "{:.1f}", 100.0, "As image AUROC."),
    ("pixel_f1_max", "pixel F1-max ↑", "{:.1f}", 100.0, "As image AUROC."),
    (
        "classification_accuracy",
        "classification acc. ↑",
        "{:.1f}",
        100.0,
        "ResNet-34 on the types (`--classification`, `--protocol`); last epoch, no selection on the test set.",
    ),
)
"""(key, column title, format, our scale to the papers' units, where the comparison holds)."""

SPLIT_NOTE = (
    "Split: the evaluation holds out the last two thirds of each anomaly type (first floor(n/3) sorted files train). "
    "The authors' DualAnoDiff trainer rounds up (`--split authors`), so their generator saw up to one test image "
    "per type; `--split floor` (default) never does."
)


def published_for(dataset: str) -> list[Published]:
    """The rows with numbers for ``dataset`` (e.g. "MVTec AD", "VisA"); empty when no paper reports on it."""
    return [p for p in PUBLISHED if p.dataset == dataset and p.values]


README_METRICS = (
    "inception_score",
    "ic_lpips",
    "kid",
    "pixel_auroc",
    "pixel_ap",
    "pixel_f1_max",
    "classification_accuracy",
)
OUTSIDE_MARK = "*"


def readme_table() -> list[str]:
    """The README's table of published numbers: one row per method and dataset, each number with where it was read;
    ``OUTSIDE_MARK`` marks a number not found in the paper itself."""
    titles = {key: title for key, title, *_ in METRICS}
    formats = {key: fmt for key, _, fmt, *_ in METRICS}
    head = ["method", "dataset", *(titles[k] for k in README_METRICS), "paper", "where each number was read"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for p in PUBLISHED:
        cells = [p.method, p.dataset]
        for key in README_METRICS:
            value = p.values.get(key)
            mark = OUTSIDE_MARK if key in p.outside_paper else ""
            cells.append("–" if value is None else formats[key].format(value) + mark)
        sources: dict[str, list[str]] = {}
        for key in README_METRICS:
            if key in p.where:
                sources.setdefault(p.where[key], []).append(titles[key].rsplit(" ", 1)[0])
        where = "; ".join(f"{', '.join(names)}: {text}" for text, names in sources.items()) or p.source
        lines.append("| " + " | ".join([*cells, p.paper, where]) + " |")
    return lines


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


__all__ = [
    "METRICS",
    "OUTSIDE_MARK",
    "PUBLISHED",
    "README_METRICS",
    "SPLIT_NOTE",
    "Published",
    "comparison_table",
    "published_for",
    "readme_table",
]
