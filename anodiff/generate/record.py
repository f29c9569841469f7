"""The settings record that makes ``anodiff generate`` resumable and shardable.

``<out>/<category>/.anodiff-generate-<anomaly>.json`` holds the settings the pairs were made with and the pairs
still owed; a run refuses folders made by someone else or with other settings. Shards share the record, so every
change to it happens under a short lock (``anodiff.common.jobs.SharedFileLock``). Pair ``i`` lies in batch
``i // batch_size`` whatever the number of shards: shard ``k`` of ``n`` takes the batches ``b % n == k``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..common.imageio import write_atomic
from ..common.jobs import SharedFileLock
from ..dataset.tree import index_of, read_pending, record_path
from ..weights.schema import DualFile

SETTINGS_VERSION = 1
LEGACY_SETTINGS = {"dtype": "fp32", **dict.fromkeys(("context", "working", "blend", "defects", "region_ids"))}
"""Values of settings that records written before the setting existed were made with."""


def settings_of(base: Path, weights: Path, dual: DualFile, **values: object) -> dict:
    return {
        "version": SETTINGS_VERSION,
        "base": str(base.resolve()),
        "weights": str(weights.resolve()),
        "prompts": list(dual.prompts),
        **values,
    }


def _existing_files(folder: Path, anomaly: str) -> list[Path]:
    dirs = [folder / sub / anomaly for sub in ("test", "ground_truth", "anomaly_part")]
    return [p for d in dirs if d.is_dir() for p in d.iterdir() if not p.name.startswith(".")]


def write_record(record: Path, settings: dict, pending: set[int]) -> None:
    write_atomic(record, json.dumps({**settings, "pending": sorted(pending)}, indent=2).encode("utf-8"))


def check_resume(folder: Path, anomaly: str, settings: dict, force: bool) -> tuple[Path, set[int]]:
    """Refuse to mix or overwrite pairs made by someone else or with other settings.

    Returns the settings file and the pairs an earlier run still owes: ones it had not finished, or (with
    ``force``) every pair on disk, so that old pairs numbered ``count`` or above are redone by a later run.
    """
    record = record_path(folder, anomaly)
    found = _existing_files(folder, anomaly)
    if force:
        return record, {i for i in (index_of(p.name) for p in found) if i is not None}
    if not record.is_file():
        if found:
            raise FileExistsError(
                f"{found[0].parent} holds files that anodiff generate did not write (e.g. {found[0].name}); "
                "choose another --out, or pass --force to write over them"
            )
        return record, set()
    try:
        previous = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FileExistsError(f"{record}: unreadable ({exc}); remove it or pass --force") from exc
    for key, value in settings.items():
        before = previous.get(key, LEGACY_SETTINGS.get(key))
        if before != value:
            raise FileExistsError(
                f"{folder}: the existing {anomaly!r} pairs were made with {key}={before!r}, not {value!r}; "
                "choose another --out, or pass --force to regenerate them"
            )
    return record, set(previous.get("pending", []))


def open_record(folder: Path, anomaly: str, settings: dict, force: bool) -> tuple[Path, set[int]]:
    """``check_resume``, and the record created (or, with ``force``, its settings replaced) under the lock, so
    concurrent shards check and create it one at a time."""
    record = record_path(folder, anomaly)
    with SharedFileLock(record.with_name(record.name + ".lock")):
        record, owed = check_resume(folder, anomaly, settings, force)
        if not record.is_file() or force:
            write_record(record, settings, read_pending(record))
    return record, owed


def update_pending(record: Path, settings: dict, add: set[int] = frozenset(), done: set[int] = frozenset()) -> None:
    """Read, change and write the pending pairs under the record's lock: shards share one record."""
    with SharedFileLock(record.with_name(record.name + ".lock")):
        write_record(record, settings, (read_pending(record) | set(add)) - set(done))


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int]:
    """``(k, n)``: this process's shard of ``n``. From ``"k/n"``, or from RANK/WORLD_SIZE (set by torchrun and
    accelerate launch), else ``(0, 1)``."""
    if shard is None:
        return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if isinstance(shard, str):
        try:
            k, n = (int(v) for v in shard.split("/"))
        except ValueError:
            raise ValueError(f"shard must look like k/n (e.g. 0/4), got {shard!r}") from None
    else:
        k, n = shard
    if not 0 <= k < n:
        raise ValueError(f"shard k/n needs 0 <= k < n, got {k}/{n}")
    return k, n


def shard_batches(todo: list[int], batch_size: int, shard: tuple[int, int]) -> list[list[int]]:
    """The batches this shard samples: pair i lies in batch i // batch_size whatever the shard count, so every
    pair is computed with the same batch mates as in a single process (bitwise the same result)."""
    k, n = shard
    batches: dict[int, list[int]] = {}
    for i in todo:
        if (i // batch_size) % n == k:
            batches.setdefault(i // batch_size, []).append(i)
    return [batches[b] for b in sorted(batches)]
