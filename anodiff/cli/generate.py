"""``anodiff generate``: the flags of ``anodiff.generate.run.generate`` and its one-line report."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from ..data.masks import METHODS
from ..generate.options import DTYPES
from ..regions.stitch import BLENDS
from ..sd15.schedulers import SCHEDULERS
from .errors import reports_errors
from .ray_options import add_ray_options, ray_runner_for


@reports_errors("generate")
def _run(args: argparse.Namespace) -> int:
    if args.from_sidecar is not None:
        return _replay(args)
    missing = [
        flag
        for flag, value in (
            ("--base", args.base),
            ("--weights", args.weights),
            ("--out", args.out),
            ("--count", args.count),
        )
        if value is None
    ]
    if missing:
        raise ValueError(f"{', '.join(missing)} required (or --from-sidecar FILE --out DIR to regenerate one pair)")
    from ..generate.run import generate

    device, runner, shard = args.device, None, args.shard
    if args.ray is not None:
        device, runner = ray_runner_for(args)
        shard = (0, 1)
    report = generate(
        args.base,
        args.weights[0] if len(args.weights) == 1 else args.weights,
        args.out,
        args.count,
        category=args.category,
        anomaly=args.anomaly,
        batch_size=args.batch_size,
        seed=args.seed,
        steps=args.steps,
        cfg=args.cfg,
        scheduler=args.scheduler,
        size=args.size,
        mask_method=args.mask_method,
        threshold=args.threshold,
        normal_dir=args.normal_dir,
        background_every=args.background_every,
        force=args.force,
        device=device,
        source=args.source,
        region=args.region,
        feather=args.feather,
        region_size=tuple(args.region_size),
        dtype=args.dtype,
        shard=shard,
        workers=args.workers,
        context=args.context,
        working=args.working,
        defects=args.defects,
        blend=args.blend,
        region_ids=args.region_ids,
        runner=runner,
    )
    print(
        f"{report.folder}: wrote {report.written} pair(s), skipped {report.skipped} already complete, "
        f"{report.redone} incomplete redone, {report.empty_masks} with an empty mask"
    )
    return 0


def _replay(args: argparse.Namespace) -> int:
    from ..generate.replay import regenerate

    if args.out is None:
        raise ValueError("--from-sidecar needs --out DIR: where the regenerated pair is written")
    image = regenerate(args.from_sidecar, args.out, base=args.base, weights=args.weights, device=args.device)
    print(f"regenerated {image} from {args.from_sidecar}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``generate`` to the ``anodiff`` command line; its ``func`` returns the exit code."""
    p = subparsers.add_parser(
        "generate",
        help="generate an MVTec-style set of anomaly images, masks and anomaly parts",
        description=(
            "Writes <out>/<category>/{test,ground_truth,anomaly_part}/<anomaly>/. Resumable: pairs whose three "
            "files exist are skipped, so running again with a larger --count adds pairs; pair i always uses seed+i."
        ),
    )
    add = p.add_argument
    add("--base", metavar="PATH", help="SD1.5: a diffusers folder or a .safetensors/.ckpt checkpoint")
    add(
        "--weights",
        nargs="+",
        metavar="FILE",
        help="DualAnoDiff .safetensors (or the authors' .bin); several with region control: defect k uses file k %% n",
    )
    add("--out", metavar="DIR", help="root of the generated dataset")
    add("--count", type=int, metavar="N", help="number of pairs (the authors made 500)")
    add("--category", default="object", help="MVTec category folder name (default: object)")
    add("--anomaly", default="defect", help="anomaly type folder name (default: defect)")
    _add_sampling_options(add)
    _add_region_options(add)
    _add_run_options(add)
    add("--force", action="store_true", help="regenerate pairs 0..count-1 even if files exist")
    p.set_defaults(func=_run)
    return p


def _add_sampling_options(add: Callable[..., argparse.Action]) -> None:
    """Batching, seeds, the sampler and the mask: how each pair is made."""
    add("--batch-size", type=int, default=4, help="pairs per UNet batch (default: 4)")
    add("--seed", type=int, default=0, help="pair i uses seed + i (default: 0)")
    add("--steps", type=int, default=None, help="denoising steps (default, as the authors: 100; 50 with --normal-dir)")
    add("--cfg", type=float, default=None, help="guidance (default, as the authors: 2.5; 2.0 with --normal-dir)")
    add("--scheduler", choices=SCHEDULERS, default="pndm", help="sampler (default: pndm, as the authors)")
    add("--size", type=int, default=512, help="image side in pixels (default: 512)")
    add("--mask-method", choices=METHODS, default="u2netp", help="mask from the anomaly part (default: u2netp)")
    add("--threshold", type=float, default=0.5, help="mask threshold on the normalised map (default: 0.5)")
    add(
        "--normal-dir",
        default=None,
        metavar="DIR",
        help="BCM backgrounds (BCM files only): a folder of normal images, or a dataset root (MVTec AD, MPDD, BTAD, "
        "VisA) whose --category training normals are used",
    )
    add("--background-every", type=int, default=50, help="pairs per background (default: 50; authors: 10 for screw)")


def _add_region_options(add: Callable[..., argparse.Action]) -> None:
    """Region control: the photos, where the defects go, and how they are cropped and pasted back."""
    add(
        "--source",
        default=None,
        metavar="IMAGE|DIR",
        help="region control: a normal photo, or a folder of them (pair i takes photo i %% n), at any size",
    )
    add(
        "--region",
        default=None,
        metavar="MASK",
        help="region control: where the defect may go (white), or 'random' for regions on each photo's object",
    )
    add("--region-ids", action="store_true", help="--region is a label image: one defect per non-zero id")
    add("--defects", type=int, default=1, help="--region random: defects per image, on disjoint regions (default 1)")
    add(
        "--context",
        type=float,
        default=2.0,
        help="crop window width and height as multiples of the region box's, per axis (default 2.0)",
    )
    add(
        "--working",
        type=int,
        default=None,
        help="the crop's longer side when generating (default: --size); up to 3x for a thin region, whose defect "
        "is kept at least 1/16 of it across",
    )
    add(
        "--blend",
        choices=BLENDS,
        default="feather",
        help="paste back with a feathered edge or OpenCV Poisson blending (default feather)",
    )
    add(
        "--region-size",
        type=float,
        nargs=2,
        default=(0.05, 0.2),
        metavar=("MIN", "MAX"),
        help="--region random: region side as a fraction of the image side (default: 0.05 0.2)",
    )
    add("--feather", type=int, default=4, help="region control: soft edge in pixels (default: 4)")


def _add_run_options(add: Callable[..., argparse.Action]) -> None:
    """Where and how the run executes: device, dtype, shards, writer threads, a sidecar replay, Ray."""
    add("--device", default=None, help="torch device (default: cuda:LOCAL_RANK if available, else cpu)")
    add(
        "--dtype",
        choices=DTYPES,
        default="auto",
        help="UNet dtype (default auto: fp16 on CUDA, fp32 on CPU); the VAE always decodes in fp32",
    )
    add(
        "--shard",
        default=None,
        metavar="K/N",
        help="this process's share of the pairs (default: RANK/WORLD_SIZE under torchrun or accelerate launch)",
    )
    add(
        "--workers",
        type=int,
        default=2,
        help="threads extracting masks and writing PNGs while sampling (with --ray: writer actors) (default 2)",
    )
    add(
        "--from-sidecar",
        default=None,
        metavar="FILE",
        help="make one pair again from its meta/<anomaly>/NNN.json into --out, byte-identical on the same machine; "
        "the recorded files are checked by sha256 (--base/--weights: where the models are now, if moved)",
    )
    add_ray_options(add)
