"""Joining a Ray cluster for ``--ray`` and the checks made before anything is written.

``--ray`` alone starts a local Ray instance (or joins ``RAY_ADDRESS``, which ``ray job submit`` sets); ``auto``
joins the cluster ``ray start`` runs on this machine; ``HOST:PORT`` (or ``ray://HOST:PORT``) a remote head. Every
mistake is a ``ClusterError`` (a ``ValueError``: the command line's one-line error, exit code 2): Ray missing, an
address that does not answer (probed with a plain TCP connect first, because ``ray.init`` retries an unreachable
head for minutes), ``--device cuda`` on a cluster without GPUs, an output folder some node cannot see.
"""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path
from typing import Any

CONNECT_SECONDS = 5.0
INSTALL_HINT = 'pip install "dualanodiff[ray]"'


class ClusterError(ValueError):
    """A Ray cluster that cannot run the job; the message says what to change."""


def import_ray() -> Any:
    """The ``ray`` module, or a ``ClusterError`` saying how to install it (Ray is an optional extra)."""
    try:
        import ray
    except ImportError:
        raise ClusterError(f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


def _probe(address: str) -> None:
    """A TCP connect to ``HOST:PORT`` (``ray://`` stripped), so an unreachable head fails in seconds."""
    where = address.split("://", 1)[-1]
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--ray {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        raise ClusterError(
            f"--ray {address}: no Ray head answers there ({exc.strerror or exc}); "
            "start one with `ray start --head` or check the address"
        ) from None


def connect(address: str | None) -> Any:
    """Join (or start) the cluster ``--ray`` names, unless this process already did; returns ``ray``."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    if address and address != "auto":
        _probe(address)
    try:
        if address or os.environ.get("RAY_ADDRESS"):
            ray.init(address=address or None, log_to_driver=True)
        else:
            ray.init(include_dashboard=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ClusterError(f"--ray {address or ''}: cannot join the Ray cluster: {first}".replace("  ", " ")) from None
    return ray


def ray_device(ray: Any, device: str | None) -> str:
    """``cuda`` or ``cpu`` for the workers: ``--device`` (``cuda:N`` is ``cuda``: Ray picks each actor's GPU), or
    ``cuda`` when the cluster has GPUs. ``ClusterError`` when CUDA is asked of a cluster without one."""
    gpus = float(ray.cluster_resources().get("GPU", 0))
    if device is None:
        return "cuda" if gpus else "cpu"
    kind = str(device).split(":", 1)[0]
    if kind == "cuda" and not gpus:
        raise ClusterError(f"--device {device}, but the Ray cluster has no GPU; drop --device to run on CPUs")
    if kind not in ("cuda", "cpu"):
        raise ClusterError(f"--device {device}: with --ray use cuda or cpu")
    return kind


def _sees(probe: str, token: str) -> bool:
    try:
        return Path(probe).read_text(encoding="utf-8") == token
    except OSError:
        return False


def write_probe(path: Path, token: str) -> None:
    path.write_text(token, encoding="utf-8")


def check_shared_folder(ray: Any, folder: Path) -> None:
    """Every node that runs work must see ``folder`` (a shared file system at the same path): the driver writes a
    token there and one zero-CPU task per node reads it back; ``ClusterError`` naming the blind nodes, so pairs
    never land on a worker's local disk. A folder this check created is removed again when it fails."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    folder = folder.resolve()
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    probe = folder / f".anodiff-ray-probe-{token}"
    write_probe(probe, token)
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
        sees = ray.remote(_sees)
        refs = [
            sees.options(
                num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(str(probe), token)
            for n in nodes
        ]
        results = ray.get(refs)
    finally:
        probe.unlink(missing_ok=True)
    blind = [str(n.get("NodeManagerAddress", n["NodeID"])) for n, ok in zip(nodes, results) if not ok]
    if blind:
        if created and not any(folder.iterdir()):
            folder.rmdir()
        raise ClusterError(
            f"{folder}: not visible from Ray node(s) {', '.join(blind)}; the output folder must be on a file system "
            "every node mounts at the same path (NFS or a cluster file system), or pairs would land on local disks"
        )
