"""Several processes on CPU: data-parallel training under torchrun (gloo), train --all drained by independent
processes, sharded generation. Slow: every case starts real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train import mvtec_root

from anodiff import load_dual
from anodiff.common.jobs import JobLock

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).parent / "multiprocess" / "train_worker.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

pytestmark = pytest.mark.slow


def torchrun(*args: str, procs: int = 2, timeout: float = 300) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), *args]
    done = subprocess.run(cmd, check=False, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]


def ranks(record: Path) -> list[dict]:
    return [json.loads((record / f"rank{k}.json").read_text()) for k in range(2)]


def test_two_process_training_divides_the_work_writes_once_and_resumes_exactly(base, data, tmp_path):
    straight, parts = tmp_path / "straight", tmp_path / "parts"
    torchrun(str(WORKER), str(base), str(data), str(straight), "4", "4", "0", str(tmp_path / "rec_a"))
    a0, a1 = ranks(tmp_path / "rec_a")
    assert a0["world"] == a1["world"] == 2
    assert a0["batches"] != a1["batches"]  # each rank trains on its own draws
    assert a0["saves"] and not a1["saves"]  # checkpoints and the final file come from the main process only
    assert [Path(p).name for p in a0["saves"]] == ["step-000002.safetensors", "dualanodiff.safetensors"]

    torchrun(str(WORKER), str(base), str(data), str(parts), "4", "2", "0", str(tmp_path / "rec_b"))
    b0, b1 = ranks(tmp_path / "rec_b")
    assert (b0["batches"], b1["batches"]) == (a0["batches"][:2], a1["batches"][:2])
    # the README's command resumes it: the same model as the uninterrupted two-process run
    torchrun(
        "-m",
        "anodiff.cli",
        "train",
        "--base",
        str(base),
        "--data",
        str(data),
        "--output",
        str(parts),
        "--steps",
        "4",
        "--batch-size",
        "2",
        "--resolution",
        "32",
        "--rank",
        "4",
        "--text-rank",
        "2",
        "--checkpoint-every",
        "2",
        "--lr",
        "1e-3",
        "--resume",
    )
    x, y = load_dual(straight / "dualanodiff.safetensors"), load_dual(parts / "dualanodiff.safetensors")
    for key in x.tensors:
        torch.testing.assert_close(x.tensors[key], y.tensors[key], atol=1e-6, rtol=1e-5)


def test_train_all_in_two_independent_processes_trains_every_job_once(base, tmp_path):
    root = mvtec_root(tmp_path, ("crack", "hole", "scratch"))
    cmd = [
        sys.executable,
        "-m",
        "anodiff.cli",
        "train",
        "--all",
        "--base",
        str(base),
        "--data",
        str(root),
        "--output",
        str(tmp_path / "runs"),
        "--steps",
        "2",
        "--batch-size",
        "1",
        "--resolution",
        "32",
        "--rank",
        "2",
        "--text-rank",
        "2",
    ]
    procs = [
        subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    trained = [line.split()[0] for out, _ in outs for line in out.splitlines() if " trained " in line]
    assert sorted(trained) == ["bottle/crack", "bottle/hole", "bottle/scratch"]  # each job exactly once
    for anomaly in ("crack", "hole", "scratch"):
        folder = tmp_path / "runs" / "bottle" / anomaly
        assert (folder / f"bottle_{anomaly}.safetensors").is_file() and JobLock(folder / ".train.lock").acquire()


def test_train_all_refuses_a_distributed_launch(base, tmp_path, monkeypatch):
    from anodiff.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    argv = ["train", "--all", "--base", str(base), "--data", str(tmp_path), "--output", str(tmp_path / "o")]
    assert main(argv) == 2
