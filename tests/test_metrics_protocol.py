"""Evaluation as the field now reports it: KID beside IS and IC-LPIPS, background preservation per defect type, the
papers' downstream protocol (``eval --protocol``) and the README's table of published numbers."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from test_metrics_eval import _eval_cli, _fake_trees, _write

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT = Path(__file__).resolve().parents[1]

# -- background preservation -------------------------------------------------------------------------------------


def test_background_psnr_counts_only_pixels_outside_the_grown_mask():
    from anodiff.metrics.background import PSNR_CAP, background_psnr, outside

    rng = np.random.default_rng(0)
    source = rng.random((32, 32, 3)).astype(np.float32)
    mask = np.zeros((32, 32), bool)
    mask[10:14, 10:14] = True
    keep = outside(mask, 2)
    assert keep.sum() == 32 * 32 - 8 * 8 and not keep[8:16, 8:16].any() and keep[7, 7] and keep[16, 16]
    assert outside(mask, 0).sum() == 32 * 32 - 16
    generated = source.copy()
    generated[9:15, 9:15] = 1.0  # the defect, a pixel past the mask: inside the grown mask, not counted
    assert background_psnr(generated, source, keep) == PSNR_CAP
    generated[0, :, :] = np.clip(generated[0] + 0.1, 0, 1)  # the background changed on one row
    diff = (generated - source)[keep]
    expected = 10 * math.log10(1.0 / float(np.mean(diff.astype(np.float64) ** 2)))
    assert background_psnr(generated, source, keep) == pytest.approx(expected, rel=1e-9) and expected < 40
    assert math.isnan(background_psnr(generated, source, np.zeros((32, 32), bool)))
    with pytest.raises(ValueError, match="dilate must be >= 0"):
        outside(mask, -1)


def _tiny_lpips():
    import lpips
    import torch

    from anodiff.metrics.perceptual import LPIPS

    torch.manual_seed(0)
    net = lpips.LPIPS(pretrained=False, net="vgg", version="0.1", pnet_rand=True, verbose=False)
    for lin in net.lins:
        lin.model[-1].weight.data.abs_()
    return LPIPS(net, size=64)


def _pair_with_source(root: Path, index: int, photo: Path, image: np.ndarray, mask: np.ndarray) -> None:
    """A generated pair made by region control: its sidecar names the photo it was generated into."""
    folder = root / "widget"
    _write(folder / "test" / "crack" / f"{index:03d}.png", image)
    _write(folder / "ground_truth" / "crack" / f"{index:03d}_mask.png", mask)
    meta = folder / "meta" / "crack" / f"{index:03d}.json"
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"version": 1, "source": photo.name, "source_root": str(photo.parent)}))


def test_background_row_compares_with_the_source_photo_or_the_nearest_normal(tmp_path):
    from anodiff.metrics.background import PSNR_CAP, background_row
    from anodiff.metrics.report import _mask
    from anodiff.metrics.tree import generated_pairs

    rng = np.random.default_rng(1)
    photo = (80 + rng.integers(0, 90, (256, 256, 3))).astype(np.uint8)
    _write(tmp_path / "photos" / "part.png", photo)
    mask = np.zeros((256, 256), np.uint8)
    mask[100:140, 60:120] = 255
    kept = photo.copy()
    kept[mask > 0] = 250  # a defect; the background is the photo's, byte for byte
    repainted = kept.copy()
    repainted[:40] = 30  # the generator also repainted the top of the part
    _pair_with_source(tmp_path / "gen", 0, tmp_path / "photos" / "part.png", kept, mask)
    _pair_with_source(tmp_path / "gen", 1, tmp_path / "photos" / "part.png", repainted, mask)
    _write(tmp_path / "gen" / "widget" / "test" / "crack" / "002.png", kept)  # no sidecar: the nearest normal
    _write(tmp_path / "gen" / "widget" / "ground_truth" / "crack" / "002_mask.png", mask)
    pairs = generated_pairs(tmp_path / "gen" / "widget")["crack"]
    normal = photo.astype(np.float32) / 255 * 0.9  # a darker normal image stands in for pair 2's missing source
    lpips = _tiny_lpips()
    rows = [background_row([p], _mask, lambda _: normal, lpips) for p in pairs]
    assert rows[0]["background_psnr"] == PSNR_CAP and rows[0]["background_lpips"] == pytest.approx(0.0, abs=1e-6)
    assert rows[0]["background_from_source"] == 1 and rows[2]["background_from_normal"] == 1
    assert 5 < rows[1]["background_psnr"] < 30 and rows[1]["background_lpips"] > 1e-3
    assert 5 < rows[2]["background_psnr"] < PSNR_CAP
    both = background_row(pairs[:2], _mask, None, None)
    assert both["background_psnr"] == pytest.approx((rows[0]["background_psnr"] + rows[1]["background_psnr"]) / 2)
    assert "background_lpips" not in both
    assert background_row(pairs[2:], _mask, None) == {"background_from_source": 0, "background_from_normal": 0}


def test_eval_reports_background_per_type_and_kid_beside_is_and_ic_lpips(tmp_path):
    from anodiff.metrics.markdown import _table
    from anodiff.metrics.published import comparison_table

    real, gen = _fake_trees(tmp_path)
    out = tmp_path / "report"
    assert (
        _eval_cli(
            [
                "eval",
                "--generated",
                str(gen),
                "--real",
                str(real),
                "--out",
                str(out),
                "--no-fid",
                "--no-is",
                "--no-lpips",
                "--background-dilate",
                "3",
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    for row in report["types"].values():  # no sidecars: every pair against its nearest train/good image
        assert row["background_from_normal"] == 6 and 10 < row["background_psnr"] < 100
    assert report["settings"]["background_dilate"] == 3
    markdown = (out / "report.md").read_text()
    assert "bg PSNR dB" in markdown and "grown by 3 px" in markdown
    off = tmp_path / "off"
    assert (
        _eval_cli(
            [
                "eval",
                "--generated",
                str(gen),
                "--real",
                str(real),
                "--out",
                str(off),
                "--no-fid",
                "--no-is",
                "--no-lpips",
                "--no-background",
            ]
        )
        == 0
    )
    assert "background_psnr" not in json.loads((off / "report.json").read_text())["types"]["crack"]
    header = _table({"crack": {"inception_score": 1.5, "kid_x1000": 12.0, "ic_lpips": 0.3, "fid": 80.0}}, {})[0]
    assert "| IS | KID x1000 | IC-LPIPS | FID |" in header
    lines = "\n".join(comparison_table({"kid": 0.012, "inception_score": 1.5}, "MVTec AD", "all"))
    assert "| KID ↓ | 0.012 | – | – | 0.040 | – |" in lines  # O2MAG's KID scale is unknown: no number


# -- the papers' downstream protocol -----------------------------------------------------------------------------


def test_protocol_sets_train_on_generated_plus_the_first_real_third(tmp_path):
    from anodiff.metrics.protocol import protocol_sets
    from anodiff.metrics.tree import generated_pairs

    real, gen = _fake_trees(tmp_path, per_kind=7, generated=6)
    sets = protocol_sets(generated_pairs(gen / "widget"), real, "widget", "floor", per_type=4)
    assert [Path(p).name for p, _ in sets["generated"]["crack"]] == ["000.png", "001.png", "002.png", "003.png"]
    assert [Path(p).name for p, _ in sets["real_train"]["crack"]] == ["000.png", "001.png"]  # floor(7 / 3)
    assert [Path(p).name for p, _ in sets["real_test"]["crack"]] == [f"{i:03d}.png" for i in range(2, 7)]
    with pytest.raises(ValueError, match="--protocol-generated must be >= 1"):
        protocol_sets(generated_pairs(gen / "widget"), real, "widget", per_type=0)


def test_epoch_items_draw_real_training_anomalies_at_their_share():
    from anodiff.metrics.localization import LocalizationData, epoch_items

    data = LocalizationData([Path("n")], {"a": [(Path("g"), Path("gm"))]}, [], [], [(Path("r"), Path("rm"))])
    items = epoch_items(data, 20000, random.Random(0), real_share=0.1)
    shares = {name: sum(str(i[0]) == name for i in items) / len(items) for name in ("n", "g", "r")}
    assert shares["n"] == pytest.approx(0.5, abs=0.02) and shares["r"] == pytest.approx(0.1, abs=0.01)
    assert shares["g"] == pytest.approx(0.4, abs=0.02)
    plain = LocalizationData([Path("n")], {"a": [(Path("g"), Path("gm"))]}, [], [])
    assert epoch_items(plain, 50, random.Random(3)) == epoch_items(plain, 50, random.Random(3), real_share=0.1)


def test_no_checkpoint_is_picked_on_the_test_set(tmp_path, monkeypatch):
    from anodiff.metrics import localization as loc
    from anodiff.metrics.tree import generated_pairs

    real, gen = _fake_trees(tmp_path)
    data = loc.build_data(generated_pairs(gen / "widget"), real, "widget", val_share=0.2)
    data = loc.LocalizationData(data.normals, data.generated, [], data.test, data.validation)
    scored = []
    original = loc.evaluate
    monkeypatch.setattr(
        loc, "evaluate", lambda model, items, *a: scored.append(len(items)) or original(model, items, *a)
    )
    config = loc.LocalizationConfig(size=32, base_width=2, epochs=3, samples_per_epoch=8, batch_size=4, pool=5)
    result = loc.train_localization(data, config, progress=False)
    assert scored == [len(data.test)]  # the test set is scored once, after the last epoch, and nothing else is
    assert (
        result.best_epoch == 3 and result.validation == {} and all("validation_score" not in h for h in result.history)
    )


def test_eval_protocol_end_to_end_on_tiny_data(tmp_path):
    real, gen = _fake_trees(tmp_path)
    out = tmp_path / "protocol"
    small = [
        "--loc-epochs",
        "2",
        "--loc-size",
        "32",
        "--loc-base-width",
        "2",
        "--loc-samples",
        "8",
        "--loc-batch-size",
        "4",
        "--cls-epochs",
        "1",
        "--cls-size",
        "32",
        "--cls-batch-size",
        "4",
    ]
    argv = [
        "eval",
        "--generated",
        str(gen),
        "--real",
        str(real),
        "--out",
        str(out),
        "--no-fid",
        "--no-is",
        "--no-lpips",
        "--no-background",
        "--protocol",
        "--protocol-generated",
        "4",
        *small,
    ]
    assert _eval_cli(argv) == 0
    report = json.loads((out / "report.json").read_text())
    protocol = report["protocol"]
    assert protocol["counts"] == {
        "generated": {"crack": 4, "dent": 4},
        "real_train": {"crack": 2, "dent": 2},
        "real_test": {"crack": 4, "dent": 4},
    }
    loc = protocol["localization"]
    assert loc["best_epoch"] == 2 and loc["validation"] == {} and 0 <= loc["test"]["pixel_auroc"] <= 1
    cls = protocol["classification"]
    assert cls["train_images"] == 2 * (4 + 2) and cls["test_images"] == 8 and 0 <= cls["accuracy"] <= 1
    markdown = (out / "report.md").read_text()
    assert "## Downstream protocol (the papers')" in markdown and "| crack | 4 | 2 | 4 |" in markdown
    assert "last epoch (no selection on the test set)" in markdown
    assert _eval_cli([*argv[: -len(small) - 2], "--protocol-generated", "10", *small]) == 0
    notes = json.loads((out / "report.json").read_text())["notes"]
    assert any("fewer than 10 generated pairs for crack, dent (6, 6)" in n for n in notes)


# -- published numbers -------------------------------------------------------------------------------------------


def test_readme_holds_the_table_of_published_numbers_with_sources_and_marks():
    from anodiff.metrics.published import OUTSIDE_MARK, PUBLISHED, README_METRICS, readme_table

    table = readme_table()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "\n".join(table) in readme, "README's table of published numbers is out of date: paste readme_table()"
    assert {p.method for p in PUBLISHED} >= {"DualAnoDiff", "AnomalyDiffusion", "SeaS", "O2MAG"}
    for published in PUBLISHED:
        assert set(published.outside_paper) <= set(published.values) and set(published.where) == set(published.values)
        (row,) = [line for line in table if line.startswith(f"| {published.method} | {published.dataset} |")]
        assert row.count(OUTSIDE_MARK) == len(published.outside_paper & set(README_METRICS))
    assert f"{OUTSIDE_MARK}: not found in the paper itself" in readme


def test_the_protocol_numbers_are_the_ones_beside_the_papers():
    from anodiff.metrics.markdown import headline_values

    report = {
        "mean": {"inception_score": 1.5, "kid": 0.01},
        "localization": {"test": {"pixel_auroc": 0.90}},
        "classification": {"accuracy": 0.4},
        "protocol": {
            "localization": {"test": {"pixel_auroc": 0.95, "pixel_f1_max": 0.5}},
            "classification": {"accuracy": 0.6},
        },
    }
    ours = headline_values(report)
    assert ours == {
        "inception_score": 1.5,
        "kid": 0.01,
        "pixel_auroc": 0.95,
        "pixel_f1_max": 0.5,
        "classification_accuracy": 0.6,
    }
    del report["protocol"]
    assert headline_values(report)["pixel_auroc"] == 0.90 and headline_values(report)["classification_accuracy"] == 0.4
