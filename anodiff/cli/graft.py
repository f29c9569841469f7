"""``anodiff graft``: the flags of ``anodiff.graft.run.graft`` (training-free one-shot defects) and its report."""

from __future__ import annotations

import argparse

from ..generate.options import DTYPES
from ..regions.stitch import BLENDS
from .errors import reports_errors
from .ray_options import add_ray_options


def _references(args: argparse.Namespace) -> list[tuple[str, str]]:
    if len(args.reference) != len(args.reference_mask):
        raise ValueError(
            f"give one --reference-mask per --reference: got {len(args.reference)} reference(s) and "
            f"{len(args.reference_mask)} mask(s)"
        )
    return list(zip(args.reference, args.reference_mask))


@reports_errors("graft")
def _run(args: argparse.Namespace) -> int:
    from ..graft.config import GraftSettings
    from ..graft.run import GraftJob, default_device, graft, resolve_dtype

    settings = GraftSettings(
        steps=args.steps, cfg=args.cfg, optimise_steps=args.optimise_steps, optimise_lr=args.optimise_lr
    )
    device, runner = args.device or default_device(), None
    if args.ray is not None:
        from ..scale.graft import graft_runner
        from .ray_options import ray_runner_for

        device, runner = ray_runner_for(args)
        runner = graft_runner(runner)
    place = "masks" if args.masks else args.place
    job = GraftJob(
        args.base,
        _references(args),
        args.normal,
        args.out,
        args.count,
        category=args.category,
        anomaly=args.anomaly,
        place=place,
        masks=args.masks,
        seed=args.seed,
        settings=settings,
        working=args.size,
        context=args.context,
        feather=args.feather,
        blend=args.blend,
        threshold=None if args.no_tighten else args.tighten,
        region_size=tuple(args.region_size),
        dtype=resolve_dtype(args.dtype, device),
        device=device,
    )
    report = graft(job, shard=None if runner else args.shard, force=args.force, runner=runner)
    print(
        f"{report.folder}: wrote {report.written} pair(s), skipped {report.skipped} already complete, "
        f"{report.redone} incomplete redone, {report.empty_masks} with an empty mask"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``graft`` to the ``anodiff`` command line."""
    p = subparsers.add_parser(
        "graft",
        help="one-shot defects without training: graft a real defect into normal photos (O2MAG)",
        description=(
            "Writes the same tree as generate (<out>/<category>/{test,ground_truth,anomaly_part,meta}/<anomaly>/), "
            "resumable and shardable alike. Pair i takes normal photo i %% n and reference i %% r."
        ),
    )
    add = p.add_argument
    add("--base", required=True, metavar="PATH", help="SD1.5: a diffusers folder or a .safetensors/.ckpt checkpoint")
    add("--reference", required=True, nargs="+", metavar="IMAGE", help="real defect photo(s) of one defect type")
    add("--reference-mask", required=True, nargs="+", metavar="PNG", help="the defect's mask, one per --reference")
    add("--normal", required=True, metavar="IMAGE|DIR", help="normal photo(s) to put defects on, at any size")
    add("--out", required=True, metavar="DIR", help="root of the generated dataset")
    add("--count", type=int, required=True, metavar="N", help="number of pairs")
    add("--masks", default=None, metavar="DIR", help="painted target masks: <stem>.png per normal photo")
    add(
        "--place",
        choices=("random", "reference"),
        default="random",
        help="without --masks: a random region on the object, or the reference mask moved/scaled/rotated onto it",
    )
    add("--category", default="object", help="MVTec category folder name and prompt word (default: object)")
    add("--anomaly", default="defect", help="anomaly type folder name and prompt word (default: defect)")
    add("--seed", type=int, default=0, help="placement of pair i uses seed + i (default: 0)")
    add("--steps", type=int, default=50, help="DDIM steps of inversion and sampling (default: 50, as O2MAG)")
    add("--cfg", type=float, default=7.5, help="guidance (default: 7.5, as O2MAG)")
    add("--optimise-steps", type=int, default=500, help="prompt-embedding Adam steps per reference (default 500)")
    add("--optimise-lr", type=float, default=3e-3, help="its learning rate (default: 3e-3)")
    add("--size", type=int, default=512, help="working size of the crop window, multiple of 64 (default: 512)")
    add("--context", type=float, default=2.0, help="crop window side as a multiple of the target's box (default 2)")
    add("--feather", type=int, default=4, help="soft edge of the paste, pixels (default: 4)")
    add("--blend", choices=BLENDS, default="feather", help="paste back feathered or Poisson-blended")
    add("--tighten", type=float, default=8 / 255, help="mask = target AND max RGB change > this (default: 8/255)")
    add("--no-tighten", action="store_true", help="the mask is the target mask itself")
    add(
        "--region-size",
        type=float,
        nargs=2,
        default=(0.05, 0.2),
        metavar=("MIN", "MAX"),
        help="--place random: region side as a fraction of the image side (default: 0.05 0.2)",
    )
    add("--device", default=None, help="torch device (default: cuda:LOCAL_RANK if available, else cpu)")
    add("--dtype", choices=DTYPES, default="auto", help="UNet dtype (default auto: fp16 on CUDA, fp32 on CPU)")
    add("--shard", default=None, metavar="K/N", help="this process's share of the pairs (default: RANK/WORLD_SIZE)")
    add("--force", action="store_true", help="regenerate pairs 0..count-1 even if files exist")
    add_ray_options(add)
    add("--workers", type=int, default=1, help="with --ray: actors writing the pairs' files (default 1)")
    p.set_defaults(func=_run)
    return p
