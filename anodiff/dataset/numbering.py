"""The next free pair index of an exported ``<category>/<anomaly>``, recorded so an export call starts from it in
constant time instead of listing folders that grow with the dataset.

The record is ``<category>/.anodiff-export-<anomaly>.next``; an export without one (a folder filled before
records existed, or by hand) lists the folders once. Exports made before the record moved here kept it in
``annotations/<category>.parts/<anomaly>.next``; it is still read. Concurrent writers only ever raise it.
"""

from __future__ import annotations

from pathlib import Path

from ..common.imageio import write_atomic
from ..common.jobs import SharedFileLock


def record_file(root: Path, category: str, anomaly: str) -> Path:
    return Path(root) / category / f".anodiff-export-{anomaly}.next"


def _legacy_file(root: Path, category: str, anomaly: str) -> Path:
    return Path(root) / "annotations" / f"{category}.parts" / f"{anomaly}.next"


def _read(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def next_index(root: Path, category: str, anomaly: str) -> int | None:
    """The recorded next free pair index of ``category/anomaly``; None when nothing is recorded."""
    found = [
        i
        for i in (_read(record_file(root, category, anomaly)), _read(_legacy_file(root, category, anomaly)))
        if i is not None
    ]
    return max(found, default=None)


def record_next_index(root: Path, category: str, anomaly: str, index: int) -> None:
    """Raise the recorded next free index to ``index`` (under a short lock: concurrent writers only raise it)."""
    path = record_file(root, category, anomaly)
    path.parent.mkdir(parents=True, exist_ok=True)
    with SharedFileLock(path.with_name(path.name + ".lock")):
        if index > (next_index(root, category, anomaly) or 0):
            write_atomic(path, str(index).encode())
