"""``run_demo``: train with and without SAIM on the same synthetic few-shot set, sample, measure, write it all.

The claim under test (DualAnoDiff §3.3): SAIM lets the anomaly branch's defect land where the global image
shows it, so the anomaly mask is a pixel-accurate label. With SAIM the masks should overlap the global defects
far above the chance level; without it the two branches share only the timestep and the noise schedule, and the
overlap should fall to chance.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import DARK_LUMA, make_fewshot, make_normals
from .export import contact_sheet, side_by_side, write_fewshot, write_mvtec, write_png
from .metrics import MIN_AREA, evaluate, with_flips
from .model import count_parameters
from .train import TrainSettings, ddim_sample, train_model

log = logging.getLogger(__name__)

DEFAULT_MINUTES = 4.5
"""Training budget per model: two models plus sampling make the whole demo about 10 minutes on 2 idle cores."""
MODELS = (("saim", True), ("no_saim", False))
METRIC_KEYS = (
    "defect_fraction",
    "anomaly_defect_fraction",
    "mean_iou",
    "chance_iou",
    "novelty_share",
    "steps",
    "seconds",
    "seed",
    "parameters",
    "final_loss",
)
SHEETS = {"saim": "sheet_saim.png", "no_saim": "sheet_no_saim.png", "both": "saim_vs_no_saim.png"}


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def pick_threads(requested: int | None = None) -> int:
    """``requested``, or 2 when at least 1.5 cores are idle and 1 otherwise.

    OpenMP threads spin while they wait: on a busy 2-core machine two threads ran a training step 10x slower than
    one (3.8 s against 0.34 s), unless ``OMP_WAIT_POLICY=PASSIVE`` is set before torch loads (scripts/demo.sh does).
    """
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads must be >= 1, got {requested}")
        return requested
    load = _load()
    idle = (os.cpu_count() or 1) - (load[0] if load else 0.0)
    return 2 if idle >= 1.5 or os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE" else 1


def _check_args(minutes: float, steps: int | None, pairs: int, size: int) -> None:
    if steps is None and not minutes > 0:
        raise ValueError(f"minutes must be > 0 (or give steps), got {minutes}")
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if pairs < 2:
        raise ValueError(f"pairs must be >= 2 (the chance level compares different pairs), got {pairs}")
    if size % 4:
        raise ValueError(f"size must be a multiple of 4 (two 2x downsamplings), got {size}")


def _train_and_score(
    data, saim: bool, settings: TrainSettings, reference: list, pairs: int, size: int, sample_steps: int, seed: int
) -> tuple[dict[str, Any], np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Train one model (with or without SAIM), sample ``pairs`` pairs and score their masks: (metrics, contact
    sheet, (global images, masks))."""
    trained = train_model(data, saim, settings, desc="with SAIM" if saim else "without SAIM")
    glob, part = ddim_sample(
        trained.model,
        pairs,
        size,
        sample_steps,
        settings.timesteps,
        seed=seed + 1,
        mixed_precision=settings.mixed_precision,
    )
    metrics, masks, _ = evaluate(glob, part, reference)
    metrics.update(
        steps=trained.steps,
        seconds=round(trained.seconds, 1),
        seed=seed,
        parameters=count_parameters(trained.model),
        final_loss=float(np.mean(trained.losses[-50:])),
    )
    label = "with" if saim else "without"
    title = f"{label} SAIM: IoU {metrics['mean_iou']:.2f} (chance {metrics['chance_iou']:.2f})"
    return metrics, contact_sheet(glob, part, masks, title), (glob, masks)


def run_demo(
    out: str | os.PathLike = "demo_out",
    minutes: float = DEFAULT_MINUTES,
    steps: int | None = None,
    seed: int = 0,
    pairs: int = 16,
    train_pairs: int = 16,
    size: int = 24,
    sample_steps: int = 25,
    threads: int | None = None,
    mixed_precision: str = "no",
) -> dict[str, Any]:
    """Run the whole demo into ``out`` and return the metrics (also written to ``out/metrics.json``).

    minutes: training budget per model (wall clock); steps: a fixed step count instead (reproducible, for tests).
    pairs: generated pairs per model; train_pairs: size of the synthetic few-shot set; threads: torch CPU threads
    (default ``pick_threads``: 2, or 1 on a busy machine); mixed_precision: ``bf16`` trains and samples the
    networks in bfloat16 (CPUs with AVX-512 BF16/AMX run it fast; elsewhere it is emulated and slower).
    """
    _check_args(minutes, steps, pairs, size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    load_start = _load()
    threads = pick_threads(threads)
    log.info("training on %d CPU thread(s); load average %s", threads, load_start)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        data = make_fewshot(train_pairs, size, seed)
        write_fewshot(out / "fewshot", data.images, data.masks)
        settings = TrainSettings(
            steps=steps,
            seconds=None if steps is not None else minutes * 60.0,
            seed=seed,
            mixed_precision=mixed_precision,
        )
        reference = with_flips(list(data.masks)) if settings.flips else list(data.masks)
        results: dict[str, Any] = {}
        sheets: dict[str, np.ndarray] = {}
        generated: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name, saim in MODELS:
            results[name], sheets[name], generated[name] = _train_and_score(
                data, saim, settings, reference, pairs, size, sample_steps, seed
            )
            write_png(out / SHEETS[name], sheets[name])
        write_png(out / SHEETS["both"], side_by_side([sheets["saim"], sheets["no_saim"]]))
        write_mvtec(out / "mvtec", *generated["saim"], make_normals(pairs, size, seed))
        report = {
            **results,
            "settings": {
                **{k: v for k, v in asdict(settings).items() if k != "seconds"},
                "minutes_per_model": None if steps is not None else minutes,
                "train_pairs": train_pairs,
                "pairs": pairs,
                "size": size,
                "sample_steps": sample_steps,
                "threads": threads,
                "dark_luma": DARK_LUMA,
                "min_area": MIN_AREA,
                "novelty_reference": "training masks and their flips" if settings.flips else "training masks",
            },
            "wall_seconds": round(time.perf_counter() - start, 1),
            "load_average": {"start": load_start, "end": _load()},
        }
        (out / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
        log.info("wrote %s", out / "metrics.json")
        return report
    finally:
        torch.set_num_threads(previous_threads)


def summary_table(report: dict[str, Any]) -> str:
    """A short text table of the with/without-SAIM metrics, for the terminal."""
    rows = [
        ("global images with a defect", "defect_fraction", "{:.0%}"),
        ("anomaly images with a mask", "anomaly_defect_fraction", "{:.0%}"),
        ("mean IoU (anomaly mask vs global defect)", "mean_iou", "{:.3f}"),
        ("chance IoU (mismatched pairs)", "chance_iou", "{:.3f}"),
        ("novel masks (best IoU with training < 0.5)", "novelty_share", "{:.0%}"),
        ("training steps", "steps", "{:d}"),
        ("training seconds", "seconds", "{:.0f}"),
    ]
    width = max(len(label) for label, _, _ in rows)
    lines = [f"{'':<{width}}  {'SAIM':>9}  {'no SAIM':>9}"]
    for label, key, fmt in rows:
        values = [fmt.format(report[name][key]) for name, _ in MODELS]
        lines.append(f"{label:<{width}}  {values[0]:>9}  {values[1]:>9}")
    lines.append(f"wall time {report['wall_seconds']:.0f} s, seed {report['saim']['seed']}")
    return "\n".join(lines)
