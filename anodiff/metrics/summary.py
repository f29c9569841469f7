"""``anodiff eval --summary``: every category's report.json averaged, the number the papers print.

The authors average each metric over the anomaly types of a category, then over the categories (``compute-is``); a
category's ``mean`` in report.json is the first step, this module the second. The overall row is what sits beside
the published numbers.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from .markdown import COLUMNS, _cell, headline_values
from .published import comparison_table
from .report_files import json_safe

LOCALIZATION_KEYS = (
    "image_auroc",
    "image_ap",
    "pixel_auroc",
    "pixel_ap",
    "pixel_f1_max",
    "au_pro",
    "classification_accuracy",
)


def read_reports(paths: list[str | os.PathLike]) -> list[dict]:
    """The report.json of each path (the file, or a folder holding it, or a folder of such folders)."""
    found: list[Path] = []
    for given in map(Path, paths):
        if given.is_file():
            found.append(given)
        elif (given / "report.json").is_file():
            found.append(given / "report.json")
        elif given.is_dir():
            found += sorted(given.glob("*/report.json"))
        else:
            raise FileNotFoundError(f"{given} does not exist; pass report.json files or the --out folders of eval")
    if not found:
        raise FileNotFoundError(f"no report.json in {', '.join(map(str, paths))}; run anodiff eval per category first")
    reports = []
    for path in found:
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a readable report.json ({err})") from err
        if not isinstance(report, dict) or "category" not in report or "mean" not in report:
            raise ValueError(f"{path}: not an anodiff eval report (no category or mean)")
        reports.append(report)
    return reports


def _category_values(report: dict) -> dict[str, float]:
    return {k: v for k, v in headline_values(report).items() if isinstance(v, (int, float))}


def summarize(reports: list[dict]) -> dict:
    """Per category its mean over types; overall the mean over categories of each metric they have (finite ones)."""
    categories = {r["category"]: _category_values(r) for r in reports}
    if len(categories) != len(reports):
        raise ValueError("two reports of one category; pass each category's report once")
    keys = sorted({k for v in categories.values() for k in v})
    overall = {}
    for key in keys:
        vals = [v[key] for v in categories.values() if key in v and math.isfinite(v[key])]
        overall[key] = float(np.mean(vals)) if vals else float("nan")
    datasets = sorted({r.get("dataset", "MVTec AD") for r in reports})
    if len(datasets) > 1:
        raise ValueError(f"the reports are of several datasets ({', '.join(datasets)}): summarise each one separately")
    return {"categories": categories, "overall": overall, "datasets": datasets}


def to_markdown(summary: dict) -> str:
    """summary.md: a row per category, the overall row, then the comparison with the published numbers."""
    columns = [c for c in COLUMNS if any(c[0] in v for v in summary["categories"].values())]
    columns += [(k, k.replace("_", " "), "{:.3f}") for k in LOCALIZATION_KEYS if k in summary["overall"]]
    lines = ["# anodiff eval: summary", "", "| category | " + " | ".join(c[1] for c in columns) + " |"]
    lines.append("|---" * (len(columns) + 1) + "|")
    for name, values in sorted(summary["categories"].items()):
        lines.append(f"| {name} | " + " | ".join(_cell(values.get(k), f) for k, _, f in columns) + " |")
    lines.append("| **overall** | " + " | ".join(_cell(summary["overall"].get(k), f) for k, _, f in columns) + " |")
    lines.append("")
    n = len(summary["categories"])
    for dataset in summary["datasets"]:
        lines += comparison_table(summary["overall"], dataset, f"mean of {n} categor{'y' if n == 1 else 'ies'}")
    return "\n".join(lines)


def write_summary(paths: list[str | os.PathLike], out: str | os.PathLike) -> dict[str, Path]:
    """Read the reports, write summary.json and summary.md into ``out``; returns the written paths."""
    summary = summarize(read_reports(paths))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {"json": out / "summary.json", "markdown": out / "summary.md"}
    written["json"].write_text(json.dumps(json_safe(summary), indent=2), encoding="utf-8")
    written["markdown"].write_text(to_markdown(summary), encoding="utf-8")
    return written


__all__ = ["read_reports", "summarize", "to_markdown", "write_summary"]
