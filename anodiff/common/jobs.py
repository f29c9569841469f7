"""Exclusive claims on jobs in a shared output folder, so that independent processes (one per GPU, or machines
sharing the folder) drain one job list (``anodiff train --all``) with every job done once.

A claim is a lock file created with ``O_CREAT | O_EXCL`` (atomic on local file systems and NFSv3+), holding its
owner (host, pid) and refreshed by a heartbeat thread. OS locks (``fcntl``/``filelock``) are not used: they are
unreliable on network folders and say nothing about the owner. A claim is stale when its owner is a dead process
on this host, or its heartbeat is older than ``stale_after``; stale claims are broken under a second short-lived
lock so that two processes never both break one claim and then both train.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import TextIO

HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 300.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def open_exclusive(path: Path) -> TextIO:
    """A new text file opened for writing; ``FileExistsError`` if ``path`` exists (the atomic claim)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    return os.fdopen(fd, "w", encoding="utf-8")


def _create(path: Path, text: str) -> bool:
    try:
        fh = open_exclusive(path)
    except FileExistsError:
        return False
    with fh:
        fh.write(text)
    return True


class JobLock:
    """``with JobLock(folder / ".train.lock") as claimed:`` — ``claimed`` is True when this process owns the job."""

    def __init__(self, path: str | os.PathLike, stale_after: float = STALE_SECONDS,
                 heartbeat: float = HEARTBEAT_SECONDS) -> None:  # fmt: skip
        self.path = Path(path)
        self.stale_after, self.heartbeat = stale_after, heartbeat
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "token": secrets.token_hex(8)}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.held = False

    def holder(self) -> dict | None:
        """The current claim's owner record, or None when the job is free (or the record is unreadable)."""
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def describe_holder(self) -> str:
        owner = self.holder() or {}
        return f"{owner.get('host', '?')}:{owner.get('pid', '?')}"

    def is_stale(self) -> bool:
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return False
        owner = self.holder() or {}
        here = owner.get("host") == self.owner["host"] and isinstance(owner.get("pid"), int)
        return (here and not _alive(owner["pid"])) or age > self.stale_after

    def _break_stale(self) -> None:
        guard = self.path.with_name(self.path.name + ".break")
        try:
            if time.time() - guard.stat().st_mtime > 60:  # a breaker that died between its two steps
                guard.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        if not _create(guard, json.dumps(self.owner)):
            return
        try:
            if self.is_stale():  # checked again under the guard: nobody re-claimed it meanwhile
                os.replace(self.path, self.path.with_name(f"{self.path.name}.stale-{secrets.token_hex(4)}"))
        except FileNotFoundError:
            pass
        finally:
            guard.unlink(missing_ok=True)

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = json.dumps({**self.owner, "since": time.time()})
        if not _create(self.path, record):
            if not self.is_stale():
                return False
            self._break_stale()
            if not _create(self.path, record):
                return False
        self.held = True
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {self.path}", daemon=True)
        self._thread.start()
        return True

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        if not self.held:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if (self.holder() or {}).get("token") == self.owner["token"]:
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class SharedFileLock:
    """``with SharedFileLock(path):`` blocks until this process holds the short lock at ``path`` (polling), for a quick
    read-modify-write of a file that several processes share (``anodiff generate``'s record)."""

    def __init__(self, path: str | os.PathLike, timeout: float = 600.0, poll: float = 0.05) -> None:
        self.lock, self.timeout, self.poll = JobLock(path, stale_after=60.0), timeout, poll

    def __enter__(self) -> JobLock:
        deadline = time.monotonic() + self.timeout
        while not self.lock.acquire():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.lock.path} stays held by {self.lock.describe_holder()}; remove it if stale")
            time.sleep(self.poll)
        return self.lock

    def __exit__(self, *exc: object) -> None:
        self.lock.release()
