"""Single-host guards for files that two processes on one machine share, and exclusive file creation.

Work spread over machines runs on Ray (``anodiff generate --ray``, ``anodiff train --all --ray``), which schedules,
retries and resumes it; nothing here tries to coordinate machines. What remains is the case of two processes on
one machine touching one file: a short read-modify-write (``SharedFileLock``: ``generate``'s record, ``filter``'s
report, ``export``'s next index) or one ``train --all`` job (``JobLock``: a second ``train --all`` on the same
machine, e.g. one per GPU, skips a job the first holds). Both are OS locks from the ``filelock`` package, released
by the OS when their process dies, so no claim ever goes stale.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

from filelock import FileLock, Timeout


def open_exclusive(path: Path) -> TextIO:
    """A new text file opened for writing; ``FileExistsError`` if ``path`` exists (the atomic claim)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    return os.fdopen(fd, "w", encoding="utf-8")


class JobLock:
    """``acquire()`` is True when this process now holds the job (non-blocking); ``release()`` gives it back."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = FileLock(self.path)
        self.held = False

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return False
        self.held = True
        return True

    def describe_holder(self) -> str:
        return f"another process on this machine holds {self.path.name}"

    def release(self) -> None:
        if self.held:
            self._lock.release()
            self.held = False

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class SharedFileLock:
    """``with SharedFileLock(path):`` blocks until this process holds the short lock at ``path``, for a quick
    read-modify-write of a file that several processes on this machine share."""

    def __init__(self, path: str | os.PathLike, timeout: float = 600.0) -> None:
        self.path, self.timeout = Path(path), timeout
        self._lock = FileLock(self.path)

    def __enter__(self) -> FileLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=self.timeout)
        except Timeout:
            raise TimeoutError(f"{self.path} stays locked by another process for {self.timeout:g} s") from None
        return self._lock

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
