"""bench/gpu_check.sh keeps working: CI runs it at small sizes on the CPU and gets every row of the table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_prints_every_row_with_numbers():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", "bench/gpu_check.sh", "--small"],
        cwd=ROOT,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[0][2:] for row in rows] == [
        "dual UNet forward / vanilla",
        "training step, peak memory",
        "generate",
        "ComfyUI Dual Sampler / KSampler",
    ]
    assert re.search(r"folded x[0-9.]+, unfolded x[0-9.]+", rows[0])
    assert re.search(r"speed x[0-9.]+, memory x[0-9.]+", rows[1])
    assert re.search(r"[0-9.]+ pairs/s", rows[2])
    assert re.search(r"\| x[0-9.]+ \|$", rows[3])
