"""fp16 on the CPU (``generate --dtype fp16``, ``train --mixed-precision fp16``) against fp32 on the same weights.

Tolerances, stated once here and in README: generated images and anomaly parts in [0, 1] differ from fp32 by a mean
absolute difference below 2e-3 and a maximum below 2e-2 (4 DDIM steps with CFG; measured ~1e-4 / ~8e-4); a training
step's loss within 1e-4 relative, and its preview sheet within 1/255 on average (measured ~0.01/255).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from test_generate_sources import FAST as GENERATE_FAST
from test_generate_sources import disc_photo
from test_pipeline import FAST, dual_file
from test_train import config
from tiny_diffusers import save_tiny_sd15

from anodiff.generate.run import generate
from anodiff.sd15.load import load_sd15
from anodiff.sd15.pipeline import DualAnoDiffPipeline
from anodiff.train.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread", "fresh_accelerate_state")
MEAN, MAX = 2e-3, 2e-2


def close_images(full: np.ndarray, half: np.ndarray, what: str) -> None:
    diff = np.abs(full.astype(np.float64) - half.astype(np.float64))
    assert diff.mean() < MEAN and diff.max() < MAX, (what, diff.mean(), diff.max())
    assert full.std() > 0.01, what  # not two flat images that agree trivially


def test_fp16_pipeline_with_bcm_matches_fp32_within_tolerance(tmp_path):
    folder = save_tiny_sd15(tmp_path / "sd")
    dual = dual_file(bcm=True)
    backgrounds = [np.random.default_rng(k).random((32, 32, 3), dtype=np.float32) for k in range(2)]
    out = {}
    for dtype in (torch.float32, torch.float16):
        base = load_sd15(folder, dtype=dtype)
        pipe = DualAnoDiffPipeline.from_sd15(base, dual)
        assert pipe.dtype == dtype and base.vae.dtype == torch.float32  # the VAE always decodes in fp32
        out[dtype] = pipe(2, seed=7, backgrounds=backgrounds, **{**FAST, "steps": 4})
    for key in ("images", "anomaly_parts"):
        close_images(getattr(out[torch.float32], key), getattr(out[torch.float16], key), key)


def test_generate_dtype_fp16_on_cpu_matches_fp32(sd_dir, plain_weights, tmp_path):
    """``generate`` with region control (crop, sample, stitch) in fp16 on the CPU: the written pairs match fp32."""
    cv2.imwrite(str(tmp_path / "photo.png"), disc_photo(120, 160, 0)[..., ::-1])
    region = np.zeros((120, 160), np.uint8)
    region[40:80, 60:110] = 255
    cv2.imwrite(str(tmp_path / "region.png"), region)
    kw = {**GENERATE_FAST, "steps": 4, "source": tmp_path / "photo.png", "region": tmp_path / "region.png"}
    for dtype in ("fp32", "fp16"):
        assert generate(sd_dir, plain_weights, tmp_path / dtype, 2, dtype=dtype, device="cpu", **kw).written == 2
    for i in range(2):
        for sub, name in (("test", f"{i:03d}.png"), ("anomaly_part", f"{i:03d}.png")):
            full, half = (
                cv2.imread(str(tmp_path / d / "object" / sub / "defect" / name)) / 255.0 for d in ("fp32", "fp16")
            )
            close_images(full, half, f"{sub}/{name}")


def test_an_fp16_training_step_and_its_preview_match_fp32(base, data, tmp_path):
    """Two steps with a preview after each: fp16 runs the UNet in float16 under autocast and a loss scaler on the
    CPU (accelerate scales only on GPUs), and the losses, the adapter's update and the previews match fp32."""
    from accelerate.state import AcceleratorState

    runs = {}
    for precision in ("no", "fp16"):
        AcceleratorState._reset_state(True)
        trainer = Trainer(config(base, data, tmp_path / precision, mixed_precision=precision, steps=2, preview_every=1))
        before = {k: v.detach().clone() for k, v in trainer.adapter.state_dict().items()}
        trainer.run()
        moved = torch.cat([(v.detach() - before[k]).flatten() for k, v in trainer.adapter.state_dict().items()])
        sheet = cv2.imread(str(tmp_path / precision / "checkpoints" / "preview-000002.png")).astype(np.float32)
        runs[precision] = trainer, moved, sheet
    half, full = runs["fp16"][0], runs["no"][0]
    assert half.sd.unet.dtype == torch.float16 and full.sd.unet.dtype == torch.float32
    on_cpu = half.accelerator.device.type == "cpu"  # on a GPU accelerate autocasts and scales fp16 itself
    assert (half.scaler is not None and half.scaler.is_enabled()) == on_cpu and full.scaler is None
    assert (tmp_path / "fp16" / "checkpoints" / "preview-000001.png").is_file()
    np.testing.assert_allclose(half.losses, full.losses, rtol=1e-4)
    update = torch.nn.functional.cosine_similarity(runs["fp16"][1], runs["no"][1], dim=0)
    assert runs["fp16"][1].abs().max() > 0 and update > 0.9, update  # the steps were taken, not skipped by the scaler
    diff = np.abs(runs["fp16"][2] - runs["no"][2])
    assert diff.mean() < 1.0 and runs["no"][2][:, :32].std() > 1.0, diff.mean()
