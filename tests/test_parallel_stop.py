"""Issue 25 item 6: Ctrl-C during a two-process (gloo, CPU) training run. A signal that reaches one rank only is
agreed by both: they stop after the same step, one checkpoint is written, every rank exits 130, and ``--resume``
in two processes gives the model of the uninterrupted two-process run. Slow: it starts real processes."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from anodiff import load_dual

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
STEPS = "24"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(base, data, out: Path, logs: Path, *extra: str) -> list[subprocess.Popen]:
    """Two ranks as torchrun starts them (the same environment variables), without torchrun's agent."""
    cmd = [
        sys.executable,
        "-m",
        "anodiff.cli",
        "train",
        "--base",
        str(base),
        "--data",
        str(data),
        "--output",
        str(out),
        "--steps",
        STEPS,
        "--batch-size",
        "2",
        "--resolution",
        "32",
        "--rank",
        "4",
        "--text-rank",
        "2",
        "--checkpoint-every",
        "1000",
        "--lr",
        "1e-3",
        *extra,
    ]
    port, procs = str(free_port()), []
    logs.mkdir(parents=True, exist_ok=True)
    for rank in range(2):
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(ROOT),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "WORLD_SIZE": "2",
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": "2",
        }
        out_f, err_f = (open(logs / f"rank{rank}.{k}", "w") for k in ("out", "err"))  # noqa: SIM115
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out_f, stderr=err_f, text=True))
    return procs


def finish(procs: list[subprocess.Popen], logs: Path) -> list[int]:
    """Exit codes of the ranks (``logs``: where their output went, for the failure message)."""
    return [p.wait(timeout=600) for p in procs]


def test_ctrl_c_on_one_rank_stops_both_after_the_same_step_once_with_130_and_resumes_exactly(base, data, tmp_path):
    straight = launch(base, data, tmp_path / "straight", tmp_path / "log_a")
    assert finish(straight, tmp_path / "log_a") == [0, 0], (tmp_path / "log_a" / "rank0.err").read_text()[-3000:]

    out, logs = tmp_path / "parts", tmp_path / "log_b"
    procs = launch(base, data, out, logs)
    deadline = time.time() + 300
    while "loss=" not in (logs / "rank0.err").read_text() and time.time() < deadline:  # a first step finished
        assert procs[0].poll() is None, (logs / "rank0.err").read_text()[-3000:]
        time.sleep(0.2)
    procs[1].send_signal(signal.SIGINT)  # the non-main rank only
    assert finish(procs, logs) == [130, 130], (logs / "rank0.err").read_text()[-3000:]
    stopped = [re.search(r"interrupted at step (\d+)", (logs / f"rank{k}.out").read_text()) for k in range(2)]
    assert all(stopped) and stopped[0][1] == stopped[1][1]  # both ranks stopped after the same step
    step = int(stopped[0][1])
    assert 1 <= step < int(STEPS)
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == [
        f"step-{step:06d}.safetensors",
        f"step-{step:06d}.state.safetensors",
    ]  # one checkpoint, written once
    assert "Traceback" not in (logs / "rank0.err").read_text() + (logs / "rank1.err").read_text()

    resumed = launch(base, data, out, tmp_path / "log_c", "--resume")
    assert finish(resumed, tmp_path / "log_c") == [0, 0], (tmp_path / "log_c" / "rank0.err").read_text()[-3000:]
    x, y = load_dual(tmp_path / "straight" / "dualanodiff.safetensors"), load_dual(out / "dualanodiff.safetensors")
    for key in x.tensors:
        torch.testing.assert_close(x.tensors[key], y.tensors[key], atol=1e-6, rtol=1e-5, msg=key)
