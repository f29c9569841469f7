from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from anodiff.common.jobs import JobLock


def test_a_claim_is_exclusive_and_released(tmp_path):
    first, second = JobLock(tmp_path / "job.lock"), JobLock(tmp_path / "job.lock")
    assert first.acquire() and not second.acquire()
    assert second.describe_holder().endswith(f":{os.getpid()}")
    first.release()
    assert not (tmp_path / "job.lock").exists() and second.acquire()
    second.release()


def test_the_claim_of_a_dead_process_is_recovered(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=False, capture_output=True, text=True)
    lock = JobLock(tmp_path / "job.lock")
    (tmp_path / "job.lock").write_text(json.dumps({"host": lock.owner["host"], "pid": int(dead.stdout), "token": "x"}))
    assert lock.is_stale() and lock.acquire()
    assert lock.holder()["token"] == lock.owner["token"]
    assert len(list(tmp_path.glob("job.lock.stale-*"))) == 1  # the stale claim is kept aside, not deleted
    lock.release()


def test_a_claim_from_another_machine_goes_stale_without_heartbeat_and_not_with_it(tmp_path):
    path = tmp_path / "job.lock"
    path.write_text(json.dumps({"host": "other-machine", "pid": 1, "token": "x"}))
    lock = JobLock(path, stale_after=5.0)
    assert not lock.acquire()  # fresh: its owner may be alive on the other machine
    old = time.time() - 10
    os.utime(path, (old, old))
    assert lock.acquire()
    lock.release()

    owner = JobLock(path, stale_after=5.0, heartbeat=0.05)
    assert owner.acquire()
    os.utime(path, (old, old))
    time.sleep(0.3)  # the heartbeat refreshed it
    assert not JobLock(path, stale_after=5.0).acquire()
    owner.release()
