"""The single-host guards left after the cross-machine lock-file scheduler moved to Ray: an OS lock (``filelock``)
that a second process cannot take while the first holds it, and that a dead holder never keeps."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from anodiff.common.jobs import JobLock, SharedFileLock


def test_a_claim_is_exclusive_and_released(tmp_path):
    first, second = JobLock(tmp_path / "job.lock"), JobLock(tmp_path / "job.lock")
    assert first.acquire() and not second.acquire()
    assert "another process" in second.describe_holder()
    first.release()
    assert second.acquire()
    second.release()


def test_another_process_cannot_take_a_held_claim_and_a_dead_holder_keeps_none(tmp_path):
    path = tmp_path / "job.lock"
    probe = textwrap.dedent(f"""
        from anodiff.common.jobs import JobLock
        print(JobLock({str(path)!r}).acquire())
    """)
    with JobLock(path) as held:
        assert held
        other = subprocess.run([sys.executable, "-c", probe], check=False, capture_output=True, text=True, timeout=120)
        assert other.stdout.strip() == "False", other.stderr
    die = f"from anodiff.common.jobs import JobLock; import os; JobLock({str(path)!r}).acquire(); os._exit(1)"
    subprocess.run([sys.executable, "-c", die], check=False, timeout=120)
    assert JobLock(path).acquire()  # the OS released the dead holder's lock: nothing stale to break


def test_shared_file_lock_times_out_with_the_path_in_the_message(tmp_path):
    path = tmp_path / "record.lock"
    with (
        SharedFileLock(path),
        pytest.raises(TimeoutError, match="record.lock stays locked"),
        SharedFileLock(path, timeout=0.1),
    ):
        pass
    with SharedFileLock(path, timeout=0.1):  # released
        pass
