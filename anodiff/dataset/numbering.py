"""The next free pair index of an exported ``<category>/<anomaly>``, recorded so an export call starts from it in
constant time instead of listing folders that grow with the dataset.

The record is ``<category>/.anodiff-export-<anomaly>.next``; an export without one (a folder filled before records
existed, or by hand) lists the folders once (``after_files``). A pair's index is claimed by creating its image file
exclusively (``claim``), so concurrent exporters never take one index twice. Exports made before the record moved here
kept it in ``annotations/<category>.parts/<anomaly>.next``; it is still read. Concurrent writers only ever raise it.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..common.files import write_new
from ..common.imageio import write_atomic
from ..common.jobs import SharedFileLock
from .tree import index_of


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


def after_files(folder: Path, anomaly: str) -> int:
    """One past the highest pair index among the files of ``folder``'s ``anomaly`` (0 when there are none)."""
    found = [
        index_of(name)
        for sub in ("test", "ground_truth")
        if (folder / sub / anomaly).is_dir()
        for name in os.listdir(folder / sub / anomaly)
    ]
    return 1 + max((i for i in found if i is not None), default=-1)


def taken(folder: Path, anomaly: str, index: int) -> bool:
    name = f"{index:03d}"
    return (folder / "test" / anomaly / f"{name}.png").exists() or (
        folder / "ground_truth" / anomaly / f"{name}_mask.png"
    ).exists()


def claim(folder: Path, anomaly: str, index: int, png: bytes, search: bool, start: int | None) -> tuple[int, Path]:
    """Create the image of the first free index from ``index`` (only ``index`` itself when not ``search``): the
    exclusive create is what lets concurrent exporters share a folder without ever taking one index twice; an index
    whose mask alone exists (its image moved away) is skipped too."""
    while True:
        path = folder / "test" / anomaly / f"{index:03d}.png"
        try:
            if search and taken(folder, anomaly, index):
                raise FileExistsError(path)
            write_new(path, png)
            return index, path
        except FileExistsError:
            if not search:
                raise FileExistsError(
                    f"start={start}: pair {index:03d} already exists in {folder}; leave start "
                    "unset to take the next free index"
                ) from None
            index += 1
