"""``anodiff demo``: SAIM's alignment claim, reproduced offline on a CPU in about 10 minutes, no pretrained weights.

A small dual-branch UNet is trained from scratch on a synthetic few-shot set (brick texture, near-black
defects, exact masks), once with the project's ``SAIM`` after every residual block and once without. Each model
then generates pairs (global image, defect alone on grey); the demo measures how well the anomaly-branch mask
matches the defect in the global image, against the chance level, and writes contact sheets, an MVTec-style
folder and ``metrics.json``. See ``run.py`` for the outputs, ``metrics.py`` for the rules.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from .run import DEFAULT_MINUTES, run_demo, summary_table

log = logging.getLogger(__name__)


def _demo(args: argparse.Namespace) -> int:
    report = run_demo(
        args.out, minutes=args.minutes, steps=args.steps, seed=args.seed, pairs=args.pairs, threads=args.threads,
        mixed_precision=args.mixed_precision,
    )
    print(summary_table(report))
    print(f"wrote {args.out}: metrics.json, saim_vs_no_saim.png, sheet_saim.png, sheet_no_saim.png, mvtec/, fewshot/")
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``demo`` subcommand to an argparse subparsers object (``parser.add_subparsers()``)."""
    demo = subparsers.add_parser(
        "demo",
        help="offline CPU demo: train a tiny dual model with and without SAIM and measure mask alignment",
        description=__doc__.splitlines()[0],
    )
    demo.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    demo.add_argument(
        "--minutes", type=float, default=DEFAULT_MINUTES,
        help=f"training budget per model in minutes, wall clock (default {DEFAULT_MINUTES}: about 10 min in all)",
    )  # fmt: skip
    demo.add_argument("--steps", type=int, default=None, help="train this many steps instead of a time budget")
    demo.add_argument("--pairs", type=int, default=16, help="pairs generated per model (default 16)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the data, the training and the sampling (default 0)")
    demo.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default 2, or 1 when the machine is busy)"
    )
    demo.add_argument("--mixed-precision", choices=["no", "bf16"], default="no",
                      help="train and sample in bfloat16 (default no: fp32)")  # fmt: skip
    demo.set_defaults(func=_demo)
    return demo


__all__ = ["DEFAULT_MINUTES", "register", "run_demo", "summary_table"]
