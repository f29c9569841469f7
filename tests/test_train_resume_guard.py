"""``--resume`` continues this run and no other: a fresh run moves older checkpoints aside, a checkpoint whose run
settings differ is refused by name, and a finished run can be continued to more steps from its very end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_train import config, write_fixed_defect_set

from anodiff import load_dual
from anodiff.train.trainer import Trainer, latest_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread", "fresh_accelerate_state")


def cli(base: Path, data: Path, out: Path, *extra: str) -> list[str]:
    """``anodiff train`` with the settings of ``test_train.config``."""
    return [
        "train",
        "--base",
        str(base),
        "--data",
        str(data),
        "--output",
        str(out),
        "--steps",
        "6",
        "--batch-size",
        "2",
        "--resolution",
        "32",
        "--rank",
        "4",
        "--text-rank",
        "2",
        "--checkpoint-every",
        "3",
        "--preview-every",
        "1000",
        "--lr",
        "1e-3",
        *extra,
    ]


def test_a_fresh_run_moves_an_earlier_runs_checkpoints_aside_so_resume_continues_only_itself(base, data, tmp_path):
    Trainer(config(base, data, tmp_path, steps=9)).run()  # run A: checkpoints at 3 and 6
    b = Trainer(config(base, data, tmp_path, force=True, lr=5e-3))  # run B, fresh
    aside = [p for p in (tmp_path / "checkpoints").iterdir() if p.is_dir()]
    assert len(aside) == 1 and aside[0].name.startswith("previous-")
    assert (aside[0] / "step-000006.safetensors").is_file() and (aside[0] / "step-000006.state.safetensors").is_file()
    b.run(until=4)
    assert latest_checkpoint(tmp_path / "checkpoints")[0] == 4
    assert Trainer(config(base, data, tmp_path, lr=5e-3, resume=True)).step == 4  # not A's step 6


def test_resume_refuses_a_checkpoint_of_other_settings_naming_the_file_and_each_field(base, data, tmp_path, capsys):
    from anodiff.cli import main

    Trainer(config(base, data, tmp_path)).run(until=2)
    state = tmp_path / "checkpoints" / "step-000002.state.safetensors"
    with pytest.raises(ValueError, match="step-000002.state.safetensors") as err:
        Trainer(config(base, data, tmp_path, resume=True, lr=5e-3, seed=7))
    assert "lr (checkpoint '0.001', now '0.005')" in str(err.value)
    assert "seed (checkpoint '32', now '7')" in str(err.value) and "rank" not in str(err.value)
    other = write_fixed_defect_set(tmp_path / "other", n=6)  # trains on 000.png and 001.png
    with pytest.raises(ValueError, match=r"data \(checkpoint '000.png,001.png,002.png', now '000.png,001.png'\)"):
        Trainer(config(base, other, tmp_path, resume=True))

    # a different rank would not even load: the command says why in one line, exit code 2, no traceback
    assert main(cli(base, data, tmp_path, "--resume", "--rank", "8")) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("anodiff train: error: ")]
    assert len(lines) == 1 and "Traceback" not in err
    assert str(state) in lines[0] and "rank (checkpoint '4', now '8')" in lines[0]
    assert "The model's shape differs (rank)" in lines[0]  # no override can load it
    assert main(cli(base, data, tmp_path, "--resume", "--rank", "8", "--resume-changed")) == 2
    # other settings: --resume-changed continues anyway, with a warning (not an exact continuation)
    changed = Trainer(config(base, data, tmp_path, resume=True, resume_changed=True, lr=5e-3))
    assert changed.step == 2
    with pytest.raises(ValueError, match="Add --resume-changed to continue anyway"):
        Trainer(config(base, data, tmp_path, resume=True, lr=5e-3))
    assert main(cli(base, data, tmp_path, "--resume", "--steps", "3")) == 0  # steps may differ
    assert load_dual(tmp_path / "dualanodiff.safetensors").metadata["steps"] == "3"


def test_resume_refuses_a_checkpoint_without_text_lora_when_the_text_encoder_trains(base, data, tmp_path):
    Trainer(config(base, data, tmp_path, train_text_encoder=False)).run(until=1)
    with pytest.raises(ValueError, match=r"text_encoder \(checkpoint 'false', now 'true'\)"):
        Trainer(config(base, data, tmp_path, resume=True))
    # a checkpoint written before run fingerprints: what its model metadata says is still checked
    state = tmp_path / "checkpoints" / "step-000001.state.safetensors"
    save_file(load_file(state), state, metadata={"step": "1"})
    with pytest.raises(ValueError, match=r"text_encoder \(checkpoint 'false', now 'true'\)"):
        Trainer(config(base, data, tmp_path, resume=True))
    assert Trainer(config(base, data, tmp_path, resume=True, train_text_encoder=False)).step == 1


def test_a_finished_run_continued_to_more_steps_equals_the_longer_run(base, data, tmp_path):
    straight = Trainer(config(base, data, tmp_path / "a", steps=6))
    straight.run()
    Trainer(config(base, data, tmp_path / "b", steps=4)).run()  # checkpoint_every 3: the end is not a multiple
    assert latest_checkpoint(tmp_path / "b" / "checkpoints")[0] == 4
    continued = Trainer(config(base, data, tmp_path / "b", steps=6, resume=True))
    assert continued.step == 4
    continued.run()
    torch.testing.assert_close(torch.tensor(continued.losses), torch.tensor(straight.losses[4:]), atol=1e-6, rtol=1e-5)
    a, b = load_dual(tmp_path / "a" / "dualanodiff.safetensors"), load_dual(tmp_path / "b" / "dualanodiff.safetensors")
    assert b.metadata["steps"] == "6"
    for key in a.tensors:
        torch.testing.assert_close(a.tensors[key], b.tensors[key], atol=1e-6, rtol=1e-5)
    # the step-4 checkpoint kept the 4-step model when the final file was rewritten at step 6
    assert load_dual(tmp_path / "b" / "checkpoints" / "step-000004.safetensors").metadata["steps"] == "4"
