from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from anodiff import load_dual
from anodiff.sd15.load import BaseModelError, load_sd15
from anodiff.train.trainer import TrainConfig, Trainer, step_generator

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def write_fixed_defect_set(folder: Path, n: int = 9, size: int = 32) -> Path:
    """Plain layout: textured grey-brown images, each with the same dark square defect."""
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for i in range(n):
        image = (rng.random((size, size, 3)) * 40 + 150).astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        mask[8:20, 10:22] = 255
        image[mask > 0] = 15
        cv2.imwrite(str(folder / "images" / f"{i:03d}.png"), image)
        cv2.imwrite(str(folder / "masks" / f"{i:03d}.png"), mask)
    return folder


def config(base, data, out, **kw):
    values = {
        "base": str(base),
        "data": str(data),
        "output": str(out),
        "steps": 6,
        "batch_size": 2,
        "resolution": 32,
        "rank": 4,
        "text_rank": 2,
        "checkpoint_every": 3,
        "preview_every": 1000,
        "progress": False,
        "lr": 1e-3,
    }
    values.update(kw)
    return TrainConfig(**values)


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(base, data, tmp_path):
    trainer = Trainer(config(base, data, tmp_path, steps=12, lr=3e-3))

    def fixed_loss():
        g = step_generator(123, 0)
        with torch.no_grad():
            return float(trainer.loss_at(trainer.batch(g), step_generator(123, 1)))

    before = fixed_loss()
    trainer.step = 0
    trainer.run()
    trainer.step = 0
    assert fixed_loss() < before * 0.95


def test_resume_reproduces_the_uninterrupted_run(base, data, tmp_path):
    straight = Trainer(config(base, data, tmp_path / "a"))
    straight.run()
    first = Trainer(config(base, data, tmp_path / "b"))
    first.run(until=3)
    assert (tmp_path / "b" / "checkpoints" / "step-000003.safetensors").is_file()
    resumed = Trainer(config(base, data, tmp_path / "b", resume=True))
    assert resumed.step == 3
    resumed.run()
    torch.testing.assert_close(torch.tensor(resumed.losses), torch.tensor(straight.losses[3:]), atol=1e-6, rtol=1e-5)
    a, b = load_dual(tmp_path / "a" / "dualanodiff.safetensors"), load_dual(tmp_path / "b" / "dualanodiff.safetensors")
    for key in a.tensors:
        torch.testing.assert_close(a.tensors[key], b.tensors[key], atol=1e-6, rtol=1e-5)
    assert a.metadata["steps"] == "6" and a.has_text_lora


def test_sigint_leaves_a_loadable_checkpoint(base, data, tmp_path):
    out = tmp_path / "run"
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
        "100000",
        "--batch-size",
        "1",
        "--resolution",
        "32",
        "--rank",
        "2",
        "--text-rank",
        "2",
        "--checkpoint-every",
        "100000",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    seen = ""
    while "loss=" not in seen and time.time() < deadline:  # wait for the first finished step on the tqdm bar
        seen += proc.stderr.read(1) or ""
        if proc.poll() is not None:
            break
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "--resume" in stdout
    checkpoints = sorted((out / "checkpoints").glob("step-*[0-9].safetensors"))
    assert checkpoints, stderr[-2000:]
    dual = load_dual(checkpoints[-1])
    assert int(dual.metadata["steps"]) >= 1


def test_bcm_and_bf16_training_steps_run(base, data, tmp_path):
    trainer = Trainer(config(base, data, tmp_path, bcm=True, mixed_precision="bf16", gradient_checkpointing=True))
    losses = [trainer.train_step() for _ in range(2)]
    assert all(np.isfinite(losses))
    layer = next(layer for _, layer in trainer.adapter.items() if layer.bcm is not None)
    assert layer.bcm.a.abs().item() > 0  # the mixing weight moved: the background pass is in the graph


def test_bad_inputs(base, data, tmp_path):
    with pytest.raises(BaseModelError, match="not found"):
        load_sd15(tmp_path / "nope")
    (tmp_path / "half").mkdir()
    with pytest.raises(BaseModelError, match="subfolder 'unet' is missing"):
        load_sd15(tmp_path / "half")
    Trainer(config(base, data, tmp_path / "done", steps=1)).run()
    with pytest.raises(FileExistsError, match="pass --force"):
        Trainer(config(base, data, tmp_path / "done", steps=1))
    with pytest.raises(ValueError, match="mixed_precision"):
        config(base, data, tmp_path, mixed_precision="fp8")


def test_dry_run_lists_the_split(base, data, capsys):
    from anodiff.cli import main

    assert main(["train", "--base", str(base), "--data", str(data), "--output", "unused", "--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert "000.png" in listed and "002.png" in listed and "003.png" not in listed  # floor(9/3) = 3 files


def test_generate_from_a_trained_model_writes_the_tree(base, data, tmp_path):
    """Quality is the demo's job (a from-scratch model); here: a trained file goes through generate end to end."""
    from anodiff.cli import main
    from anodiff.data.masks import extract_mask

    model = Trainer(config(base, data, tmp_path / "run", steps=4, lr=3e-3)).run()
    out = tmp_path / "gen"
    code = main(
        [
            "generate",
            "--base",
            str(base),
            "--weights",
            str(model),
            "--out",
            str(out),
            "--count",
            "2",
            "--batch-size",
            "2",
            "--steps",
            "4",
            "--scheduler",
            "ddim",
            "--size",
            "32",
            "--mask-method",
            "grey",
        ]
    )
    assert code == 0
    root = out / "object"
    for i in range(2):
        image = cv2.imread(str(root / "test" / "defect" / f"{i:03d}.png"))
        part = cv2.cvtColor(cv2.imread(str(root / "anomaly_part" / "defect" / f"{i:03d}.png")), cv2.COLOR_BGR2RGB)
        mask = cv2.imread(str(root / "ground_truth" / "defect" / f"{i:03d}_mask.png"), cv2.IMREAD_GRAYSCALE)
        assert image.shape == (32, 32, 3) and set(np.unique(mask)) <= {0, 255}
        assert mask.any()
        again = extract_mask(part.astype(np.float32) / 255, method="grey")  # from the 8-bit PNG: rounding at the edge
        assert ((mask > 0) != again).mean() < 0.02


def mvtec_root(tmp_path: Path, anomalies=("crack", "hole")) -> Path:
    """An MVTec-layout root ``tmp_path/mvtec`` with category bottle and three pairs per anomaly type."""
    root = tmp_path / "mvtec"
    for anomaly in anomalies:
        write_fixed_defect_set(tmp_path / anomaly, n=3)
        (root / "bottle" / "test" / anomaly).mkdir(parents=True)
        (root / "bottle" / "ground_truth" / anomaly).mkdir(parents=True)
        for i in range(3):
            (tmp_path / anomaly / "images" / f"{i:03d}.png").rename(root / "bottle" / "test" / anomaly / f"{i:03d}.png")
            (tmp_path / anomaly / "masks" / f"{i:03d}.png").rename(
                root / "bottle" / "ground_truth" / anomaly / f"{i:03d}_mask.png"
            )
    return root


def test_train_all_trains_each_anomaly_type_once(base, tmp_path, capsys):
    from anodiff.cli import main

    root = mvtec_root(tmp_path)
    argv = [
        "train",
        "--all",
        "--base",
        str(base),
        "--data",
        str(root),
        "--output",
        str(tmp_path / "runs"),
        "--steps",
        "1",
        "--batch-size",
        "1",
        "--resolution",
        "32",
        "--rank",
        "2",
        "--text-rank",
        "2",
    ]
    assert main(argv) == 0
    first = capsys.readouterr().out
    assert first.count("trained") == 2
    for anomaly in ("crack", "hole"):
        assert (tmp_path / "runs" / "bottle" / anomaly / f"bottle_{anomaly}.safetensors").is_file()
    assert main(argv) == 0
    assert capsys.readouterr().out.count("skipped (done)") == 2


def test_latent_cache_gives_the_uncached_losses_with_far_fewer_encodes(base, data, tmp_path):
    runs = {}
    for cache in (True, False):
        trainer = Trainer(config(base, data, tmp_path / str(cache), steps=8, cache_latents=cache))
        trainer.run()
        runs[cache] = trainer
    torch.testing.assert_close(torch.tensor(runs[True].losses), torch.tensor(runs[False].losses), atol=1e-5, rtol=1e-4)
    assert runs[False].encodes == 8 * 2  # two encoder calls (image, anomaly part) every step
    # at most (3 images x 4 flip variants x 2 targets) encodes in all, however long the run
    assert runs[True].encodes <= 3 * 4 * 2 and len(runs[True].latents.slots) == runs[True].encodes


def test_ranks_draw_different_batches_and_rank_zero_keeps_the_single_process_stream():
    from anodiff.train.trainer import step_generator

    draws = [torch.randint(1000, (8,), generator=step_generator(32, 5, rank)).tolist() for rank in range(3)]
    assert len({tuple(d) for d in draws}) == 3
    assert draws[0] == torch.randint(1000, (8,), generator=torch.Generator().manual_seed(32 * 1_000_003 + 5)).tolist()
    assert torch.randint(1000, (8,), generator=step_generator(32, 5, 1)).tolist() == draws[1]  # reproducible


def test_gradient_checkpointing_runs_the_modules_in_training_mode_with_the_same_numbers(base, data, tmp_path):
    """transformers checkpoints CLIP layers only in training mode (diffusers < 0.32 the UNet's too): the trainer
    switches both to train(), which changes no number (SD1.5 has no dropout)."""
    on = Trainer(config(base, data, tmp_path / "on", gradient_checkpointing=True))
    encoder = on._unwrapped.text_encoder
    assert on.sd.unet.training and encoder.training
    calls = {"unet": 0, "text": 0}

    def counting(func, part):
        def run(*args, **kwargs):
            calls[part] += 1
            return func(*args, **kwargs)

        return run

    for part, module in (("unet", on.sd.unet), ("text", encoder)):
        for m in module.modules():
            if getattr(m, "gradient_checkpointing", False) and getattr(m, "_gradient_checkpointing_func", None):
                m._gradient_checkpointing_func = counting(m._gradient_checkpointing_func, part)
    loss = on.train_step()
    assert calls["unet"] > 0 and calls["text"] > 0  # checkpointing ran in both

    before = Trainer(config(base, data, tmp_path / "off", gradient_checkpointing=True))
    before.sd.unet.eval()  # the modes load_sd15 leaves
    before._unwrapped.text_encoder.eval()
    assert before.train_step() == loss
    for key, value in before.adapter.state_dict().items():
        torch.testing.assert_close(on.adapter.state_dict()[key], value, atol=0, rtol=0)
