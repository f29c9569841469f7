"""``anodiff export`` and ``anodiff filter``: a generated tree into a dataset, and its doubtful pairs aside."""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from ..common.imageio import read_rgb
from ..common.pixels import read_pixels
from ..dataset.checks import FOREGROUNDS
from ..dataset.coco import INSTANCES, finalise, merge_coco
from ..dataset.export import export_dataset, parse_formats
from ..dataset.filter import GATE, REJECTED_DIR, filter_tree
from ..dataset.sidecar import pair_sidecar
from ..dataset.tools import TOOLS, export_anomalib, export_asbench, normal_files
from ..dataset.tree import find_pairs, read_mask
from .errors import reports_errors


@reports_errors("export", ImportError)
def _export(args: argparse.Namespace) -> int:
    if args.finalise:
        for path, holds in finalise(args.out, args.category):
            print(f"COCO file {path}: {holds}")
        return 0
    if args.from_dir is None:
        raise ValueError("--from is required (or --finalise alone to write the COCO files of --out)")
    source, out = Path(args.from_dir), Path(args.out)
    if out.resolve() == source.resolve():
        raise ValueError("--out must differ from --from: an export adds to its target and would double the tree")
    if args.format in TOOLS:
        return _export_for_tool(args, find_pairs(source, args.category, args.anomaly), out)
    formats = parse_formats(args.format)
    pairs = find_pairs(source, args.category, args.anomaly)
    for (category, anomaly), group in itertools.groupby(pairs, key=lambda p: (p.category, p.anomaly)):
        group = list(group)
        report = export_dataset(
            (read_pixels(p.image) for p in group),
            (read_mask(p.mask) for p in group),
            out,
            category,
            anomaly,
            formats,
            instances=args.instances,
            merge=False,
            sidecars=(pair_sidecar(p.image) for p in group),
            total=len(group),
        )
        print(report.summary())
    if "coco" in formats:
        for category in sorted({p.category for p in pairs}):
            print(f"COCO file {merge_coco(out, category)}")
    return 0


def _export_for_tool(args: argparse.Namespace, pairs: list, out: Path) -> int:
    """``--format anomalib`` / ``asbench``: one layout per category (``anodiff.dataset.tools``)."""
    for category in sorted({p.category for p in pairs}):
        chosen = [p for p in pairs if p.category == category]
        if args.format == "anomalib":
            if args.normal_dir is None:
                raise ValueError("--format anomalib needs --normal-dir: the real normal images of the category")
            counts = export_anomalib(chosen, out, args.normal_dir, args.val_share)
        else:
            counts = export_asbench(chosen, out, _nearest_normal(args.normal_dir), args.size)
        print(f"{out / category} ({args.format}): " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def _nearest_normal(folder: str | None):
    """``--normal-dir``'s image nearest to a given one (``metrics.alignment``), or None without the folder."""
    if folder is None:
        return None
    from ..metrics.alignment import nearest, thumbnails

    normals = [read_rgb(p) for p in normal_files(folder)]
    thumbs = thumbnails(normals)
    return lambda image: normals[nearest(image, thumbs)]


@reports_errors("filter", TypeError)
def _filter(args: argparse.Namespace) -> int:
    names = ("min_area", "max_area", "max_pieces", "min_foreground", "min_agreement", "change_threshold", "blur")
    limits = {name: getattr(args, name) for name in names}
    report = filter_tree(
        args.dir, args.category, args.anomaly, args.foreground, args.source, args.move_to, args.dry_run, **limits
    )
    for record in report.dropped:
        print(f"{record['image']}: {record['reason']}")
    verb = "would move" if args.dry_run else "moved"
    where = "" if args.dry_run else f" to {args.move_to or Path(args.dir) / REJECTED_DIR}"
    print(
        f"checked {report.checked} pair(s): kept {report.kept}, {verb} {len(report.dropped)}{where}; "
        f"reasons in {report.report}"
    )
    return 0


def register_export(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``export`` to the ``anodiff`` command line; its ``func`` returns the exit code."""
    p = subparsers.add_parser(
        "export",
        help="export a generated tree as an MVTec AD tree and/or COCO instance annotations",
        description=(
            "Adds every pair (test/<anomaly>/NNN.png with its ground_truth mask) of a tree written by anodiff "
            "generate to OUT: numbering continues after what OUT already holds, nothing is overwritten, and "
            "OUT/annotations/<category>.json gains the new images and annotations."
        ),
    )
    add = p.add_argument
    add("--from", dest="from_dir", metavar="DIR", help="root of a tree written by anodiff generate")
    add(
        "--finalise",
        action="store_true",
        help="only write OUT/annotations/<category>.json from the records appended so far (ComfyUI's Export Dataset / "
        "Export Defects append; this is Finalise Dataset on the command line)",
    )
    add("--out", required=True, metavar="DIR", help="dataset root to add to (created if missing)")
    add(
        "--format",
        default="mvtec,coco",
        help="mvtec, coco or mvtec,coco (default: both); or anomalib (Folder datamodule layout) or asbench "
        "(image/augmented/mask), written whole into a new --out",
    )
    add(
        "--normal-dir",
        default=None,
        metavar="DIR",
        help="real normal images: anomalib's normal folders (needed), ASBench's origin for pairs without a source "
        "photo in their sidecar",
    )
    add("--val-share", type=float, default=0.5, help="anomalib: share of each type's pairs in validation (0.5)")
    add("--size", type=int, default=256, help="asbench: image side in pixels (256, ASBench's working size)")
    add("--category", default=None, help="only this category (default: all)")
    add("--anomaly", default=None, help="only this anomaly type (default: all)")
    add(
        "--instances",
        choices=INSTANCES,
        default="component",
        help="one COCO annotation per connected component (default) or per mask",
    )
    p.set_defaults(func=_export)
    return p


def register_filter(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``filter`` to the ``anodiff`` command line; its ``func`` returns the exit code."""
    p = subparsers.add_parser(
        "filter",
        help="move generated pairs with untrustworthy masks aside, with a reason for each",
        description=(
            "Checks every pair of a tree written by anodiff generate and moves the dropped ones (image, mask, "
            "anomaly part) aside, never deleting them; the reasons go to DIR/filter_report.json (appended per run)."
        ),
    )
    add = p.add_argument
    add("--dir", required=True, metavar="DIR", help="root of a tree written by anodiff generate (its --out)")
    add("--category", default=None, help="only this category (default: all)")
    add("--anomaly", default=None, help="only this anomaly type (default: all)")
    add(
        "--min-area",
        type=float,
        default=GATE["min_area"],
        help=f"drop masks covering less of the image, a share in [0, 1] (default: {GATE['min_area']})",
    )
    add(
        "--max-area",
        type=float,
        default=GATE["max_area"],
        help=f"drop masks covering more of the image; 1 turns it off (default: {GATE['max_area']})",
    )
    add(
        "--max-pieces",
        type=int,
        default=GATE["max_pieces"],
        help=f"drop masks in more 8-connected pieces; 0 turns it off, raise it for --defects K pairs "
        f"(default: {GATE['max_pieces']})",
    )
    add(
        "--foreground",
        choices=FOREGROUNDS,
        default="none",
        help="u2netp: drop masks mostly off the object found by U2-Net-P (object categories, not textures); "
        "default: none",
    )
    add("--min-foreground", type=float, default=0.5, help="share of the mask on the object (default: 0.5)")
    add(
        "--source",
        default=None,
        metavar="IMAGE",
        help="the normal photo the defects were generated into (region control); resized to each image",
    )
    add("--min-agreement", type=float, default=0.3, help="IoU of mask and changed region, with --source (0.3)")
    add("--change-threshold", type=float, default=0.1, help="difference counted as a change, in [0, 1] (0.1)")
    add("--blur", type=float, default=2.0, help="Gaussian sigma in pixels on the difference (default: 2)")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--move-to", default=None, metavar="DIR", help=f"where dropped pairs go (default: DIR/{REJECTED_DIR})"
    )
    where.add_argument("--dry-run", action="store_true", help="only report; move nothing")
    p.set_defaults(func=_filter)
    return p
