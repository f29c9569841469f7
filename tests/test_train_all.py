"""``train --all``: Ctrl-C stops the whole job list (exit 130, the job not taken for trained), and ``--force`` with
several processes still trains each job once."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from test_train import config, mvtec_root

from anodiff.common.jobs import JobLock
from anodiff.train import trainer as trainer_module
from anodiff.train.trainer import Trainer, TrainingInterrupted, train

pytestmark = pytest.mark.usefixtures("one_torch_thread", "fresh_accelerate_state")


def ctrl_c_after_the_first_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``Trainer`` gets a SIGINT during its first step, as a Ctrl-C on the terminal would deliver it."""
    original = Trainer.train_step

    def step(self: Trainer) -> float:
        loss = original(self)
        if self.step == 1:
            signal.raise_signal(signal.SIGINT)
        return loss

    monkeypatch.setattr(Trainer, "train_step", step)


def argv(root: Path, runs: Path, base: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--all",
        "--base",
        str(base),
        "--data",
        str(root),
        "--output",
        str(runs),
        "--steps",
        "3",
        "--batch-size",
        "1",
        "--resolution",
        "32",
        "--rank",
        "2",
        "--text-rank",
        "2",
        *extra,
    ]


def test_train_raises_training_interrupted_after_writing_the_checkpoint(base, data, tmp_path, monkeypatch):
    ctrl_c_after_the_first_step(monkeypatch)
    with pytest.raises(TrainingInterrupted) as stop:
        train(config(base, data, tmp_path))
    assert isinstance(stop.value, KeyboardInterrupt) and stop.value.step == 1
    assert stop.value.checkpoint == tmp_path / "checkpoints" / "step-000001.safetensors"
    assert stop.value.checkpoint.is_file() and not (tmp_path / "dualanodiff.safetensors").exists()


def test_ctrl_c_stops_train_all_with_exit_130_and_the_resume_hint(base, tmp_path, monkeypatch, capsys):
    from anodiff.cli import main

    ctrl_c_after_the_first_step(monkeypatch)
    root, runs = mvtec_root(tmp_path), tmp_path / "runs"
    try:
        code = main(argv(root, runs, base))
    except KeyboardInterrupt:  # uncaught it would end the pytest session
        pytest.fail("Ctrl-C escaped `train --all`: expected exit code 130")
    assert code == 130
    out = capsys.readouterr().out
    assert "--resume" in out and " trained " not in out
    assert "bottle/crack" in out and "interrupted" in out and "bottle/hole" not in out  # the list stopped
    crack = runs / "bottle" / "crack"
    assert (crack / "checkpoints" / "step-000001.safetensors").is_file() and JobLock(crack / ".train.lock").acquire()
    assert not (crack / "bottle_crack.safetensors").exists() and not (runs / "bottle" / "hole").exists()


def test_train_all_force_skips_a_job_another_process_finished_during_this_invocation(
    base, tmp_path, monkeypatch, capsys
):
    """Process P trains crack while process Q (simulated) finishes hole: P, reaching hole unlocked and done since P
    started, skips it; finals older than the invocation are trained again, as --force asks."""
    from anodiff.cli import main

    root, runs = mvtec_root(tmp_path), tmp_path / "runs"
    finals = {a: runs / "bottle" / a / f"bottle_{a}.safetensors" for a in ("crack", "hole")}
    hour_ago = time.time() - 3600
    for final in finals.values():
        final.parent.mkdir(parents=True)
        final.write_bytes(b"an earlier run")
        os.utime(final, (hour_ago, hour_ago))
    trained = []

    def fake_train(config) -> Path:
        trained.append(config.anomaly)
        finals[config.anomaly].write_bytes(b"this invocation")
        if config.anomaly == "crack":
            finals["hole"].write_bytes(b"the other process")  # Q finished hole meanwhile
        return finals[config.anomaly]

    monkeypatch.setattr(trainer_module, "train", fake_train)
    assert main(argv(root, runs, base, "--force")) == 0
    assert trained == ["crack"]
    assert "skipped (done)" in capsys.readouterr().out
    assert finals["hole"].read_bytes() == b"the other process"

    for final in finals.values():  # a later --force invocation trains both again
        os.utime(final, (hour_ago, hour_ago))
    monkeypatch.setattr(trainer_module, "train", lambda config: trained.append(config.anomaly) or Path())
    assert main(argv(root, runs, base, "--force")) == 0
    assert trained == ["crack", "crack", "hole"]
