"""bf16 (which CPUs run) through training with previews, resume, and generation compared with fp32."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from test_pipeline import FAST, dual_file
from test_train import config
from tiny_diffusers import save_tiny_sd15

from anodiff import load_dual
from anodiff.sd15.load import load_sd15
from anodiff.sd15.pipeline import DualAnoDiffPipeline
from anodiff.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread", "fresh_accelerate_state")


def test_bf16_training_previews_every_step_and_resumes_across_a_preview(base, data, tmp_path):
    kw = {"mixed_precision": "bf16", "preview_every": 1, "steps": 4, "checkpoint_every": 2}
    straight = Trainer(config(base, data, tmp_path / "a", **kw))
    assert straight.sd.unet.dtype == torch.bfloat16
    straight.run()
    previews = sorted((tmp_path / "a" / "checkpoints").glob("preview-*.png"))
    assert [p.name for p in previews] == [f"preview-{k:06d}.png" for k in range(1, 5)]
    sheet = cv2.imread(str(previews[-1]))
    assert sheet.shape == (32, 96, 3) and sheet[:, :32].std() > 1.0  # global | anomaly | mask, not a flat image

    first = Trainer(config(base, data, tmp_path / "b", **kw))
    first.run(until=2)
    resumed = Trainer(config(base, data, tmp_path / "b", resume=True, **kw))
    assert resumed.step == 2
    resumed.run()  # previews at steps 3 and 4 after the resume
    assert (tmp_path / "b" / "checkpoints" / "preview-000004.png").is_file()
    torch.testing.assert_close(torch.tensor(resumed.losses), torch.tensor(straight.losses[2:]), atol=1e-6, rtol=1e-5)
    a, b = load_dual(tmp_path / "a" / "dualanodiff.safetensors"), load_dual(tmp_path / "b" / "dualanodiff.safetensors")
    for key in a.tensors:
        torch.testing.assert_close(a.tensors[key], b.tensors[key], atol=1e-6, rtol=1e-5)


def test_a_bf16_preview_matches_the_fp32_one(base, data, tmp_path):
    """The same weights sampled by the preview in a bf16 and an fp32 run: the sheets agree within 8/255 on
    average (bf16 keeps 8 bits of mantissa; 20 DDIM steps compound it)."""
    sheets = {}
    from accelerate.state import AcceleratorState

    for precision in ("no", "bf16"):
        AcceleratorState._reset_state(True)
        trainer = Trainer(config(base, data, tmp_path / precision, mixed_precision=precision, steps=1))
        sheets[precision] = cv2.imread(str(trainer.write_preview())).astype(np.float32)
    assert np.abs(sheets["no"][:, :64] - sheets["bf16"][:, :64]).mean() < 8.0


def test_bf16_generation_matches_fp32_within_tolerance(tmp_path):
    """Tolerance: mean absolute difference < 0.01 and max < 0.15 in [0, 1] images after 4 DDIM steps with CFG."""
    folder = save_tiny_sd15(tmp_path / "sd")
    dual = dual_file()
    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        base = load_sd15(folder, dtype=dtype)
        pipe = DualAnoDiffPipeline.from_sd15(base, dual)
        assert pipe.dtype == dtype and base.vae.dtype == torch.float32  # the VAE always decodes in fp32
        out[dtype] = pipe(2, seed=7, **{**FAST, "steps": 4})
    for key in ("images", "anomaly_parts"):
        full, half = getattr(out[torch.float32], key), getattr(out[torch.bfloat16], key)
        diff = np.abs(full - half)
        assert diff.mean() < 0.01 and diff.max() < 0.15, (key, diff.mean(), diff.max())
        assert full.std() > 0.01  # not two flat images that agree trivially
