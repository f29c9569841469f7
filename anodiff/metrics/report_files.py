"""Writing an evaluation report to disk: report.json (JSON-safe: NaN and infinities as null), report.md and the
PNG plots; ``json_safe`` serves the cross-run summary too."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


def json_safe(value):
    """JSON-safe copy: NaN and infinities become null."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return str(value)
    return value


def write_report(report: dict, out: str | os.PathLike) -> dict[str, Path]:
    """Write report.json, report.md and the PNG plots into ``out``; returns the written paths by kind."""
    from .markdown import to_markdown
    from .plots import bar_charts, matplotlib_available, training_curve

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = {"json": out / "report.json", "markdown": out / "report.md"}
    if not matplotlib_available():
        report["notes"].append("plots skipped: matplotlib is not installed (pip install matplotlib)")
    plot = bar_charts(report["types"], out / "metrics_by_type.png", f"{report['category']}: metrics per anomaly type")
    if plot:
        written["plot"] = plot
    loc = report.get("localization")
    curve = training_curve(loc["history"], out / "localization_training.png") if loc else None
    if curve:
        written["curve"] = curve
    written["json"].write_text(json.dumps(json_safe(report), indent=2), encoding="utf-8")
    written["markdown"].write_text(to_markdown(report, {k: p.name for k, p in written.items()}), encoding="utf-8")
    return written


__all__ = ["json_safe", "write_report"]
