"""``--ray`` on the commands that make pairs (``generate``, ``graft``): the options and the runner they select."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def add_ray_options(add: Callable[..., object]) -> None:
    """``--ray [ADDRESS]`` and ``--replicas`` (``--workers`` is each command's own: writer threads or actors)."""
    add(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="sample on a Ray cluster (no ADDRESS: a local Ray, or RAY_ADDRESS; auto: the cluster `ray start` "
        "runs; HOST:PORT); --out must be on a file system every node shares; needs dualanodiff[ray]",
    )
    add(
        "--replicas",
        type=int,
        default=1,
        help="with --ray: pipeline actors, each loading the model once (one GPU each on CUDA) (default 1)",
    )


def ray_runner_for(args: argparse.Namespace) -> tuple[str, Callable]:
    """``--ray``: join the cluster, pick the workers' device and check the output folder is shared, before
    anything is written; returns (device, the Ray runner)."""
    if args.shard is not None:
        raise ValueError("--shard and --ray exclude each other: Ray spreads the batches itself")
    if args.replicas < 1:
        raise ValueError(f"--replicas must be >= 1, got {args.replicas}")
    from ..scale.cluster import check_shared_folder, connect, ray_device
    from ..scale.generate import ray_runner

    ray = connect(args.ray or None)
    device = ray_device(ray, args.device)
    check_shared_folder(ray, Path(args.out))
    return device, ray_runner(replicas=args.replicas, device=device, writers=max(1, args.workers))
