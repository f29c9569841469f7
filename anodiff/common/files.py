"""Atomic file writes, apart from the image codecs: weight files, records and labels are written without OpenCV."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_atomic(path: Path, data: bytes, overwrite: bool = True) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path`` (``overwrite``) or
    hard-link it into place, which raises ``FileExistsError`` when ``path`` exists: never half a file, and with
    ``overwrite=False`` never a clobbered one. Where the file system has no hard links, check-then-rename.

    The file gets the mode ``open()`` would give it (0666 less the umask), not ``mkstemp``'s private 0600: images,
    labels and weight files are read by other users' tools (ComfyUI, a training job).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if overwrite:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:
            if path.exists():
                raise FileExistsError(f"{path} exists") from None
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_new(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data`` atomically; ``FileExistsError`` if it exists (nothing is ever overwritten)."""
    try:
        write_atomic(path, data, overwrite=False)
    except FileExistsError:
        raise FileExistsError(f"{path} exists; this never overwrites a file") from None
