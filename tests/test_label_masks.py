"""One mask rule for every reader (``anodiff.common.mask_rule``): VisA's label masks (defect pixels 1, 2, 3) count
every non-zero pixel through training, eval and ``eval --localization``; MVTec's 0/255 masks read as before."""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest
import test_layouts
from test_layouts import S, _image, _write, visa
from test_metrics_eval import _eval_cli

from anodiff.common import mask_rule
from anodiff.common.mask_rule import HALF, NONZERO, binarise, read_binary_mask, rule_for
from anodiff.data.layouts import detect_layout


def _label_mask() -> np.ndarray:
    """Three defects with ids 1, 2, 3 (VisA's raw masks): 48 + 16 + 9 = 73 defect pixels."""
    m = np.zeros((S, S), np.uint8)
    m[2:8, 2:10] = 1
    m[20:24, 20:24] = 2
    m[12:15, 26:29] = 3
    return m


LABEL_PIXELS = 73


@pytest.fixture(autouse=True)
def fresh_notices():
    mask_rule._noticed.clear()
    yield
    mask_rule._noticed.clear()


@pytest.fixture
def visa_labels(tmp_path, monkeypatch):
    """A VisA tree (split CSV) whose masks hold ids 1-3 and never 255."""
    monkeypatch.setattr(test_layouts, "_mask", _label_mask)
    return visa(tmp_path / "visa", categories=("candle",), n=6, normals=8)


def test_rules_on_stored_values(caplog):
    mvtec = np.zeros((S, S), np.uint8)
    mvtec[4:9, 4:9] = 255
    mvtec[0, 0] = 100  # a JPEG-ish stray value stays background under the half rule
    assert np.array_equal(binarise(mvtec, HALF), mvtec > 127)
    assert np.array_equal(binarise(mvtec.astype(np.uint16) * 257, HALF), mvtec > 127)  # 16-bit: > 32767
    assert np.array_equal(binarise(mvtec / 255.0, HALF), mvtec > 127)  # float: > 0.5
    colour = np.stack([np.zeros_like(mvtec), mvtec, np.zeros_like(mvtec)], axis=2)
    assert np.array_equal(binarise(colour, HALF), mvtec > 127)  # brightest channel
    labels = _label_mask()
    assert binarise(labels, NONZERO).sum() == LABEL_PIXELS
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="anodiff.common.mask_rule"):
        assert not binarise(labels, HALF, "mask a.png").any()  # ids 1-3 under the half rule: empty, and said so
        assert binarise((labels > 0).astype(np.uint8), HALF, "mask b.png").sum() == LABEL_PIXELS  # a 0/1 mask
        assert not caplog.records[0].getMessage().count("\n")
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2 and "no value above 127 (largest 3)" in said[0] and "0/255" in said[0]
    assert "a 0/1 mask" in said[1] and f"{LABEL_PIXELS} px" in said[1]
    with pytest.raises(ValueError, match="mask rule must be one of half, nonzero"):
        binarise(labels, "brightest")


def test_the_layout_decides_the_rule(tmp_path, caplog):
    visa_mask = tmp_path / "candle" / "Data" / "Masks" / "Anomaly" / "000.png"
    mvtec_mask = tmp_path / "bottle" / "ground_truth" / "crack" / "000_mask.png"
    assert rule_for(visa_mask) == NONZERO and rule_for(mvtec_mask) == HALF
    assert rule_for(tmp_path / "masks" / "x.png") == HALF
    for path in (visa_mask, visa_mask.with_name("001.png"), mvtec_mask):
        _write(path, _label_mask())
    with caplog.at_level(logging.WARNING, logger="anodiff.common.mask_rule"):
        assert read_binary_mask(visa_mask).sum() == LABEL_PIXELS
        assert read_binary_mask(visa_mask.with_name("001.png")).sum() == LABEL_PIXELS
        assert not read_binary_mask(mvtec_mask).any()
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 2  # once per folder and rule, one line each
    assert "every non-zero pixel is defect (73 px; VisA's rule)" in said[0] and str(visa_mask) in said[0]
    assert "not repeated for the other masks in" in said[0] and "half-brightness rule leaves it empty" in said[1]


def test_visa_label_masks_train(visa_labels, tmp_path):
    """Training used to refuse every VisA mask as 'no pixel above half brightness'; now the pairs load with every
    non-zero pixel as defect and a 1-step run writes a model."""
    from accelerate.state import AcceleratorState
    from tiny_diffusers import save_tiny_sd15

    from anodiff.data import fewshot
    from anodiff.train.trainer import TrainConfig, Trainer

    samples = fewshot.validate_samples(fewshot.find_samples(visa_labels, "candle", "anomaly"))
    assert len(samples) == 6 and {rule_for(s.mask) for s in samples} == {detect_layout(visa_labels).mask_rule}
    assert detect_layout(visa_labels).mask_rule == NONZERO
    dataset = fewshot.FewShotDataset(samples[:1], resolution=S, flips=False)
    np.testing.assert_array_equal(dataset.items()[0]["mask"][0].numpy() > 0, _label_mask() > 0)
    AcceleratorState._reset_state(True)
    config = TrainConfig(
        base=str(save_tiny_sd15(tmp_path / "sd15")),
        data=str(visa_labels),
        category="candle",
        anomaly="anomaly",
        output=str(tmp_path / "run"),
        steps=1,
        batch_size=1,
        resolution=S,
        rank=2,
        text_rank=2,
        checkpoint_every=1000,
        preview_every=1000,
        progress=False,
    )
    trainer = Trainer(config)
    assert [s.image.name for s in trainer.samples] == ["000.JPG", "001.JPG"]
    assert trainer.run().is_file()


def _generated(root, category="candle", n=6):
    """A generated tree as anodiff generate writes it (0/255 masks) for VisA's one anomaly type."""
    for i in range(n):
        mask = np.zeros((S, S), np.uint8)
        mask[4 + i : 12 + i, 6:14] = 255
        image = _image(50 + i)
        image[mask > 0] = 240
        _write(root / category / "test" / "anomaly" / f"{i:03d}.png", image)
        _write(root / category / "ground_truth" / "anomaly" / f"{i:03d}_mask.png", mask)
    return root


def test_visa_label_masks_through_eval_and_localization(visa_labels, tmp_path, monkeypatch):
    """eval scored VisA's real masks as empty and eval --localization failed on them (no defect region)."""
    from anodiff.metrics import assets

    monkeypatch.setattr(assets, "REPO_CACHE_DIR", tmp_path / "no-cache")
    monkeypatch.setattr(assets, "PACK_MODELS_DIR", tmp_path / "no-models")
    gen, out = _generated(tmp_path / "gen"), tmp_path / "report"
    argv = [
        "eval",
        "--generated",
        str(gen),
        "--real",
        str(visa_labels),
        "--out",
        str(out),
        "--no-fid",
        "--no-is",
        "--no-lpips",
        "--localization",
        "--loc-epochs",
        "1",
        "--loc-size",
        "32",
        "--loc-base-width",
        "2",
        "--loc-samples",
        "8",
        "--loc-batch-size",
        "4",
    ]
    assert _eval_cli(argv) == 0
    report = json.loads((out / "report.json").read_text())
    row = report["types"]["anomaly"]
    assert row["real_train"] == 2 and row["real_test"] == 4
    assert row["mask_area_real"] == pytest.approx(LABEL_PIXELS / S**2, rel=0.05)
    assert row["mask_area_generated"] == pytest.approx(64 / S**2, rel=0.05)
    loc = report["localization"]["test"]
    assert set(loc) >= {"pixel_auroc", "pixel_ap", "au_pro"} and all(0.0 <= loc[k] <= 1.0 for k in loc)
    assert "label masks (non-zero = defect)" in report["layout"]


def test_mvtec_masks_read_as_before(tmp_path):
    """0/255 masks give exactly what the old readers gave (float / 255, then > half), file by file."""
    from anodiff.dataset.tree import read_mask as tree_mask
    from anodiff.metrics.localization import load_item
    from anodiff.metrics.report import WORK_SIZE, _mask

    mask = np.zeros((S, S), np.uint8)
    mask[5:20, 7:25] = 255
    mask[21, 3:9] = 255
    path = _write(tmp_path / "bottle" / "ground_truth" / "crack" / "000_mask.png", mask)
    image = _write(tmp_path / "bottle" / "test" / "crack" / "000.png", _image(0))
    old = mask.astype(np.float32) / 255.0
    np.testing.assert_array_equal(tree_mask(path), mask > 127)
    work = cv2.resize(old, (WORK_SIZE, WORK_SIZE), interpolation=cv2.INTER_AREA) >= 0.5
    np.testing.assert_array_equal(_mask(path), work)
    _, loaded = load_item((image, path), 16)
    np.testing.assert_array_equal(loaded[0] > 0, cv2.resize(old, (16, 16), interpolation=cv2.INTER_AREA) >= 0.5)
    edge = mask.copy()
    edge[5:20, 6] = 90  # an anti-aliased edge below half stays background
    np.testing.assert_array_equal(tree_mask(_write(path, edge)), mask > 127)
