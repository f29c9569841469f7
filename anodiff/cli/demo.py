"""``anodiff demo``: the flags of ``anodiff.demo.run_demo`` (SAIM's alignment claim, offline on a CPU)."""

from __future__ import annotations

import argparse

from .. import demo as demo_package
from ..demo.run import DEFAULT_MINUTES, run_demo, summary_table


def _demo(args: argparse.Namespace) -> int:
    report = run_demo(
        args.out,
        minutes=args.minutes,
        steps=args.steps,
        seed=args.seed,
        pairs=args.pairs,
        threads=args.threads,
        mixed_precision=args.mixed_precision,
    )
    print(summary_table(report))
    print(f"wrote {args.out}: metrics.json, saim_vs_no_saim.png, sheet_saim.png, sheet_no_saim.png, mvtec/, fewshot/")
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``demo`` subcommand to an argparse subparsers object (``parser.add_subparsers()``)."""
    demo = subparsers.add_parser(
        "demo",
        help="offline CPU demo: train a tiny dual model with and without SAIM and measure mask alignment",
        description=demo_package.__doc__.splitlines()[0],
    )
    demo.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    demo.add_argument(
        "--minutes",
        type=float,
        default=DEFAULT_MINUTES,
        help=f"training budget per model in minutes, wall clock (default {DEFAULT_MINUTES}: about 10 min in all)",
    )
    demo.add_argument("--steps", type=int, default=None, help="train this many steps instead of a time budget")
    demo.add_argument("--pairs", type=int, default=16, help="pairs generated per model (default 16)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the data, the training and the sampling (default 0)")
    demo.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default 2, or 1 when the machine is busy)"
    )
    demo.add_argument(
        "--mixed-precision",
        choices=["no", "bf16"],
        default="no",
        help="train and sample in bfloat16 (default no: fp32)",
    )
    demo.set_defaults(func=_demo)
    return demo
