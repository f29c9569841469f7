"""``anodiff.demo``: the synthetic data, the metric functions on hand-made masks, and one tiny end-to-end run.

Sample quality is what the demo itself measures (metrics.json); here only the plumbing and the arithmetic.
"""

from __future__ import annotations

import argparse
import json

import cv2
import numpy as np
import pytest
import torch

from anodiff.cli.demo import register
from anodiff.demo import run_demo, summary_table
from anodiff.demo.data import DARK_LUMA, KINDS, draw_defect, luminance, make_fewshot
from anodiff.demo.metrics import chance_iou, defect_region, iou, novelty_share, with_flips
from anodiff.demo.model import PairUNet
from anodiff.demo.run import METRIC_KEYS
from anodiff.demo.train import cosine_alphas_cumprod
from anodiff.model.pairs import interleave


def box(y0: int, x0: int, y1: int, x1: int, size: int = 8) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_fewshot_masks_are_exactly_the_dark_pixels() -> None:
    data = make_fewshot(n=12, size=24, seed=3)
    assert data.images.shape == (12, 24, 24, 3) and data.masks.shape == (12, 24, 24)
    assert set(data.kinds) == set(KINDS)
    dark = luminance(data.images) < DARK_LUMA
    np.testing.assert_array_equal(dark, data.masks)
    assert all(m.sum() >= 4 for m in data.masks)
    np.testing.assert_array_equal(defect_region(data.images[0]), data.masks[0])


def test_fewshot_is_deterministic_and_parts_sit_on_grey() -> None:
    a, b = make_fewshot(n=4, seed=7), make_fewshot(n=4, seed=7)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, make_fewshot(n=4, seed=8).images)
    parts = a.parts
    np.testing.assert_array_equal(parts[~a.masks], 0.5)
    np.testing.assert_array_equal(parts[a.masks], a.images[a.masks])


@pytest.mark.parametrize("kind", KINDS)
def test_defects_vary(kind: str) -> None:
    rng = np.random.default_rng(0)
    masks = [draw_defect(kind, 24, rng) for _ in range(6)]
    assert all(m.any() for m in masks)
    assert len({m.tobytes() for m in masks}) == 6


def test_unknown_defect_kind() -> None:
    with pytest.raises(ValueError, match="unknown defect kind"):
        draw_defect("dent", 24, np.random.default_rng(0))


def test_iou_by_hand() -> None:
    a = box(0, 0, 4, 4)
    assert iou(a, a) == 1.0
    assert iou(a, box(4, 4, 8, 8)) == 0.0
    assert iou(a, box(0, 2, 4, 6)) == pytest.approx(8 / 24)  # overlap 4x2, union 16 + 16 - 8
    assert iou(np.zeros((8, 8), bool), np.zeros((8, 8), bool)) == 1.0


def test_chance_iou_by_hand() -> None:
    # Anomaly masks and global regions: pair i is aligned, and masks 0 and 1 half-overlap each other.
    first = [box(0, 0, 4, 4), box(0, 2, 4, 6), box(6, 6, 8, 8)]
    second = [m.copy() for m in first]
    # i != j: (0,1) 8/24, (1,0) 8/24, the four pairs with mask 2 are disjoint -> mean (1/3 + 1/3) / 6.
    assert chance_iou(first, second) == pytest.approx((2 / 3) / 6)
    assert np.isnan(chance_iou(first[:1], second[:1]))


def test_novelty_share_by_hand() -> None:
    training = [box(0, 0, 4, 4), box(4, 4, 8, 8)]
    generated = [
        box(0, 0, 4, 4),  # a copy: IoU 1
        box(0, 1, 4, 4),  # IoU 12/16 with training[0]: not novel
        box(0, 4, 4, 8),  # disjoint from both: novel
        box(0, 2, 4, 6),  # IoU 8/24 < 0.5: novel
        np.zeros((8, 8), bool),  # no defect: left out
    ]
    assert novelty_share(generated, training) == pytest.approx(2 / 4)
    assert novelty_share([np.zeros((8, 8), bool)], training) == 0.0
    flipped = box(0, 0, 4, 4)[:, ::-1]
    assert novelty_share([flipped], training) == 1.0
    assert novelty_share([flipped], with_flips(training)) == 0.0


def test_cosine_schedule() -> None:
    ab = cosine_alphas_cumprod(200)
    assert ab.shape == (200,)
    assert ab[0] > 0.999 and ab[-1] < 1e-3
    assert torch.all(ab[1:] < ab[:-1])


@pytest.mark.parametrize("saim", [True, False])
def test_model_shapes_and_saim_couples_the_branches(saim: bool) -> None:
    torch.manual_seed(0)
    model = PairUNet(saim=saim).eval()
    g, a = torch.randn(2, 3, 24, 24), torch.randn(2, 3, 24, 24)
    t = torch.tensor([5, 5, 90, 90])
    with torch.no_grad():
        out = model(interleave(g, a), t)
        changed = model(interleave(g, a + torch.randn_like(a)), t)
    assert out.shape == (4, 3, 24, 24)
    # The global rows see their anomaly partner only through SAIM.
    assert (not torch.allclose(out[0::2], changed[0::2])) is saim
    assert (sum(k.startswith("saims.") for k, _ in model.named_parameters()) > 0) is saim


def test_demo_end_to_end(tmp_path) -> None:
    out = tmp_path / "demo"
    report = run_demo(out, steps=24, pairs=3, train_pairs=6, sample_steps=4, threads=1, seed=1)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(report))
    for name in ("saim", "no_saim"):
        assert set(METRIC_KEYS) <= set(saved[name])
        assert saved[name]["steps"] == 24 and saved[name]["seed"] == 1
        assert 0.0 <= saved[name]["mean_iou"] <= 1.0
    assert saved["saim"]["parameters"] > saved["no_saim"]["parameters"]
    assert {"settings", "wall_seconds", "load_average"} <= set(saved)
    for sheet in ("sheet_saim.png", "sheet_no_saim.png", "saim_vs_no_saim.png"):
        image = cv2.imread(str(out / sheet))
        assert image is not None and image.shape[0] > 3 * 24 and image.shape[2] == 3
    root = out / "mvtec" / "synthetic"
    names = ["000", "001", "002"]
    assert sorted(p.stem for p in (root / "test" / "defect").iterdir()) == names
    assert sorted(p.name for p in (root / "ground_truth" / "defect").iterdir()) == [f"{n}_mask.png" for n in names]
    assert sorted(p.stem for p in (root / "train" / "good").iterdir()) == names
    mask = cv2.imread(str(root / "ground_truth" / "defect" / "000_mask.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (24, 24) and set(np.unique(mask)) <= {0, 255}
    assert len(list((out / "fewshot" / "images").iterdir())) == 6
    assert len(list((out / "fewshot" / "masks").iterdir())) == 6
    assert "mean IoU" in summary_table(report)


def test_register_adds_the_demo_subcommand() -> None:
    parser = argparse.ArgumentParser(prog="anodiff")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["demo", "--out", "x", "--steps", "3", "--pairs", "4", "--seed", "2"])
    assert (args.command, args.out, args.steps, args.pairs, args.seed) == ("demo", "x", 3, 4, 2)
    assert args.minutes > 0 and callable(args.func)


def test_run_demo_rejects_bad_budgets(tmp_path) -> None:
    with pytest.raises(ValueError, match="minutes"):
        run_demo(tmp_path, minutes=0)
    with pytest.raises(ValueError, match="pairs"):
        run_demo(tmp_path, steps=1, pairs=1)


def test_pick_threads(monkeypatch) -> None:
    from anodiff.demo import run

    assert run.pick_threads(3) == 3
    with pytest.raises(ValueError, match="threads"):
        run.pick_threads(0)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(run.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(run, "_load", lambda: [0.1, 0.1, 0.1])
    assert run.pick_threads() == 2
    monkeypatch.setattr(run, "_load", lambda: [3.0, 3.0, 3.0])
    assert run.pick_threads() == 1
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert run.pick_threads() == 2


@pytest.mark.usefixtures("one_torch_thread")
def test_bf16_training_and_sampling_track_fp32() -> None:
    """Same data, seed and steps: the bf16 loss curve stays near the fp32 one, and the fp32-trained model sampled
    in bf16 gives the fp32 samples within 0.05 on average (images in [0, 1])."""
    from anodiff.demo.data import make_fewshot
    from anodiff.demo.train import TrainSettings, ddim_sample, train_model

    data = make_fewshot(8, 16, 0)
    full = train_model(data, True, TrainSettings(steps=20, batch_pairs=4, seed=0))
    half = train_model(data, True, TrainSettings(steps=20, batch_pairs=4, seed=0, mixed_precision="bf16"))
    np.testing.assert_allclose(half.losses[:5], full.losses[:5], rtol=0.05)
    a = ddim_sample(full.model, 4, 16, steps=10, seed=1)
    b = ddim_sample(full.model, 4, 16, steps=10, seed=1, mixed_precision="bf16")
    for x, y in zip(a, b):
        assert np.abs(x - y).mean() < 0.05 and x.std() > 0.01
