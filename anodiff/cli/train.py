"""``anodiff train``: one model from a few anomaly images, or ``--all`` (category, anomaly) jobs of a dataset root.

The flags are written out by hand, not derived with transformers' ``HfArgumentParser`` from ``TrainConfig``:
that parser names flags after the fields (``--batch_size`` first, ``--no_train_text_encoder``, where we have
``--no-text-encoder``), adds a flag for every field (``--weight_decay``, ``--cache_latents``, ``--progress`` and
positive ``--saim``/``--flips`` that take an optional value) and makes ``--resume``/``--force`` accept a value,
so the command's flags, help and behaviour would change. Every flag's ``dest`` is a ``TrainConfig`` field (or
``all``/``dry_run``, which are not the trainer's), and ``train_config`` copies those that were given, so unset
flags keep ``TrainConfig``'s defaults (tests/test_cli_layer.py checks both).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import fields
from pathlib import Path

from ..common.precision import PRECISIONS
from ..data.fewshot import SPLIT_RULES
from ..train.config import TrainConfig

COMMAND_ONLY = ("all", "dry_run", "ray", "retries")
"""``train`` flags that steer the command, not the training run."""


def train_config(args: argparse.Namespace, **override) -> TrainConfig:
    """The ``TrainConfig`` of the parsed flags: the given ones (not None), then ``override``, over the defaults."""
    names = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    values.update(override)
    return TrainConfig(**values)


def _say_layout(data: str) -> None:
    """Print the dataset layout ``--data`` was read as (MVTec AD, MPDD, BTAD, VisA, plain)."""
    from ..data.layouts import detect_layout

    print(f"--data: {detect_layout(data).describe()}")


def _train(args: argparse.Namespace) -> int:
    from ..data import fewshot

    if args.all:
        return _train_all(args)
    if args.ray is not None:
        raise ValueError("--ray spreads the jobs of --all over a Ray cluster; add --all (one job runs as usual)")
    config = train_config(args)
    _say_layout(config.data)
    if args.dry_run:
        samples = fewshot.split_train(fewshot.find_samples(config.data, config.category, config.anomaly), config.split)
        fewshot.validate_samples(samples)
        print(fewshot.describe(samples))
        return 0
    from ..train.trainer import TrainingInterrupted, train

    try:
        path = train(config)
    except TrainingInterrupted as stop:
        print(
            f"interrupted at step {stop.step}: checkpoint {stop.checkpoint}; continue with the same command and "
            "--resume"
        )
        return 130
    print(f"wrote {path}")
    return 0


def _started(output: Path) -> float:
    """Now, by the clock of the file system holding ``output`` (the mtime of a scratch file there), so that final
    files other machines write to a shared folder compare with it without clock skew."""
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=output, prefix=".train-all-start-") as fh:
        return os.fstat(fh.fileno()).st_mtime


def _done(final: Path, force: bool, started: float) -> bool:
    """Whether the job of ``final`` needs no training: it exists and, with --force, was written after ``started``
    (by another process of the same drain, so that --force still trains each job once)."""
    try:
        written = final.stat().st_mtime
    except FileNotFoundError:
        return False
    return not force or written >= started


def _train_all_ray(args: argparse.Namespace) -> int:
    """``--all --ray``: the jobs as Ray tasks (``anodiff.scale.train``), then one row per job."""
    from ..data import fewshot
    from ..scale.cluster import check_shared_folder, connect, ray_device
    from ..scale.train import train_all_on_ray

    ray = connect(args.ray or None)
    device = ray_device(ray, None)
    _say_layout(args.data)
    check_shared_folder(ray, Path(args.output))
    configs = [
        train_config(args, category=c, anomaly=a, output=str(Path(args.output).resolve() / c / a))
        for c, a in fewshot.list_jobs(args.data)
    ]
    rows, interrupted = train_all_on_ray(ray, configs, device=device, retries=args.retries)
    _print_rows([(r.category, r.anomaly, r.status, r.path) for r in rows])
    if interrupted:
        print("interrupted; run the same command again: finished jobs are skipped, started ones resume")
        return 130
    return 0 if all(not r.status.startswith("failed") for r in rows) else 1


def _print_rows(rows: list[tuple[str, str, str, str]]) -> None:
    width = max((len(f"{c}/{a}") for c, a, _, _ in rows), default=10)
    for category, anomaly, status, path in rows:
        print(f"{category + '/' + anomaly:<{width}}  {status:<17}  {path}")


def _train_all(args: argparse.Namespace) -> int:
    """One model per (category, anomaly type) of an MVTec root; finished ones are skipped. Each job is held under
    a single-host lock in its output folder, so independent processes on one machine (one per GPU) drain the list
    together, each job trained once; across machines use ``--ray``. Ctrl-C stops the whole list (exit 130)."""
    from ..common.jobs import JobLock
    from ..data import fewshot
    from ..train.trainer import TrainingInterrupted, train

    if args.ray is not None and not args.dry_run:
        return _train_all_ray(args)

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(
            "train --all spreads whole jobs over independent processes: start one `anodiff train --all` per GPU "
            "(e.g. CUDA_VISIBLE_DEVICES=1 anodiff train --all ...), not accelerate launch/torchrun"
        )
    rows, interrupted = [], None
    _say_layout(args.data)
    started = _started(Path(args.output)) if not args.dry_run else 0.0
    for category, anomaly in fewshot.list_jobs(args.data):
        out = Path(args.output) / category / anomaly
        config = train_config(args, category=category, anomaly=anomaly, output=str(out))
        final = out / f"{config.model_name}.safetensors"
        if args.dry_run:
            samples = fewshot.split_train(fewshot.find_samples(args.data, category, anomaly), config.split)
            print(fewshot.describe(samples))
            continue
        if _done(final, bool(args.force), started):
            rows.append((category, anomaly, "skipped (done)", str(final)))
            continue
        lock = JobLock(out / ".train.lock")
        if not lock.acquire():
            rows.append((category, anomaly, "skipped (claimed)", lock.describe_holder()))
            continue
        try:
            if _done(final, bool(args.force), started):  # finished by another process between the check and the claim
                rows.append((category, anomaly, "skipped (done)", str(final)))
                continue
            rows.append((category, anomaly, "trained", str(train(config))))
        except (ValueError, FileNotFoundError) as exc:
            rows.append((category, anomaly, f"failed: {exc}", ""))
        except TrainingInterrupted as stop:
            rows.append((category, anomaly, "interrupted", str(stop.checkpoint)))
            interrupted = stop
        finally:
            lock.release()
        if interrupted:
            break
    _print_rows(rows)
    if interrupted:
        print(f"{interrupted}; continue with the same command and --resume")
        return 130
    return 0 if all(not r[2].startswith("failed") for r in rows) else 1


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``train``; flags default to None so that ``TrainConfig``'s own defaults apply (``train_config``)."""
    train = subparsers.add_parser("train", help="train a dual model on a few anomaly images (diffusers + accelerate)")
    train.add_argument("--base", required=True, help="SD1.5: a diffusers folder or a .safetensors/.ckpt checkpoint")
    train.add_argument(
        "--data", required=True, help="dataset root (MVTec AD, MPDD, BTAD, VisA: layout detected), or images/ + masks/"
    )
    train.add_argument("--category", default=None, help="MVTec category (e.g. bottle)")
    train.add_argument("--anomaly", default=None, help="MVTec anomaly type (e.g. broken_large)")
    train.add_argument("--output", "--out", dest="output", required=True, help="output folder")
    train.add_argument("--all", action="store_true", help="train every (category, anomaly) of the MVTec root")
    train.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="with --all: one Ray task per job, one GPU each, retried and resumed (no ADDRESS: a "
        "local Ray; auto: the running cluster); needs dualanodiff[ray]",
    )
    train.add_argument("--retries", type=int, default=3, help="with --ray: retries of a job whose worker died")
    train.add_argument("--dry-run", action="store_true", help="list the exact training files and stop")
    train.add_argument("--name", default=None, help="final file name (default <category>_<anomaly>)")
    train.add_argument("--steps", type=int, default=None, help="optimisation steps (default 5000)")
    train.add_argument("--batch-size", type=int, default=None, help="pairs per step (default 4)")
    train.add_argument("--lr", type=float, default=None, help="learning rate, constant (default 2e-5)")
    train.add_argument("--rank", type=int, default=None, help="UNet LoRA rank per branch (default 32)")
    train.add_argument("--text-rank", type=int, default=None, help="text-encoder LoRA rank (default 32)")
    train.add_argument(
        "--no-text-encoder",
        dest="train_text_encoder",
        action="store_false",
        default=None,
        help="do not train the text-encoder LoRA",
    )
    train.add_argument("--no-saim", dest="saim", action="store_false", default=None, help="ablation: no SAIM")
    train.add_argument(
        "--saim-zero-init",
        action="store_true",
        default=None,
        help="zero SAIM's out-linear at start (ours; the authors do not)",
    )
    train.add_argument("--bcm", action="store_true", default=None, help="train background compensation too")
    train.add_argument("--resolution", type=int, default=None, help="training size in pixels (default 512)")
    train.add_argument(
        "--no-flips",
        dest="flips",
        action="store_false",
        default=None,
        help="no random flips (orientation-sensitive objects: cable, transistor)",
    )
    train.add_argument(
        "--split",
        choices=SPLIT_RULES,
        default=None,
        help="floor: first floor(n/3) sorted files (default); authors: their rounding",
    )
    train.add_argument("--prompt-global", default=None)
    train.add_argument("--prompt-anomaly", default=None)
    train.add_argument("--seed", type=int, default=None, help="default 32, as the authors")
    train.add_argument("--mixed-precision", choices=PRECISIONS, default=None)
    train.add_argument("--gradient-checkpointing", action="store_true", default=None)
    train.add_argument("--adam8bit", choices=["auto", "on", "off"], default=None)
    train.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints (default 500)")
    train.add_argument("--preview-every", type=int, default=None, help="steps between preview PNGs (default 500)")
    train.add_argument("--resume", action="store_true", default=None, help="continue from the newest checkpoint")
    train.add_argument(
        "--resume-changed",
        action="store_true",
        default=None,
        help="with --resume: continue although settings such as --lr, the data or the number of "
        "processes changed (warned; the model shape must still match)",
    )
    train.add_argument("--force", action="store_true", default=None, help="train again over a finished model")
    train.set_defaults(func=_train)
    return train
