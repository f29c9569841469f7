"""``anodiff eval`` end to end on tiny synthetic categories with a random Inception: the report's IS equals
torch-fidelity's command on the same folder, and the table puts it beside the published numbers of the detected
dataset (MVTec AD, VisA); ``--summary`` averages the categories."""

from __future__ import annotations

import argparse
import json

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

S = 32


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def _pair(rng):
    image = (100 + rng.integers(0, 20, (S, S, 3))).astype(np.uint8)
    mask = np.zeros((S, S), np.uint8)
    y, x = rng.integers(0, S - 8, 2)
    image[y : y + 8, x : x + 8] = rng.integers(150, 255, 3)
    mask[y : y + 8, x : x + 8] = 255
    return image, mask


def _generated(root, category, kind, n, rng):
    for i in range(n):
        image, mask = _pair(rng)
        image = (rng.random((S, S, 3)) * rng.integers(60, 255)).astype(
            np.uint8
        )  # varied: the random net tells them apart
        _write(root / category / "test" / kind / f"{i:03d}.png", image)
        _write(root / category / "ground_truth" / kind / f"{i:03d}_mask.png", mask)


def _mvtec(root, category, kind, rng):
    for i in range(6):
        image, mask = _pair(rng)
        _write(root / category / "test" / kind / f"{i:03d}.png", image)
        _write(root / category / "ground_truth" / kind / f"{i:03d}_mask.png", mask)
    for split in ("train", "test"):
        for i in range(4):
            _write(root / category / split / "good" / f"{i:03d}.png", _pair(rng)[0])


def _visa(root, category, rng):
    for i in range(6):
        image, mask = _pair(rng)
        _write(root / category / "Data" / "Images" / "Anomaly" / f"{i:03d}.JPG", image)
        _write(root / category / "Data" / "Masks" / "Anomaly" / f"{i:03d}.png", mask)
    for i in range(10):
        _write(root / category / "Data" / "Images" / "Normal" / f"{i:04d}.JPG", _pair(rng)[0])


def _eval(argv):
    from anodiff.cli.eval import register

    parser = argparse.ArgumentParser(prog="anodiff")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["eval", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    from metric_nets import save_random_inception

    return save_random_inception(tmp_path_factory.mktemp("is") / "pt_inception-random.pth")


def test_eval_reports_is_beside_the_papers_and_summarises(tmp_path, inception_file, monkeypatch):
    import torch_fidelity

    monkeypatch.delenv("ANODIFF_INCEPTION_LOGITS", raising=False)
    rng = np.random.default_rng(0)
    _mvtec(tmp_path / "mvtec", "bottle", "crack", rng)
    _generated(tmp_path / "gen", "bottle", "crack", 12, rng)
    _visa(tmp_path / "visa", "candle", rng)
    _generated(tmp_path / "gen_visa", "candle", "anomaly", 11, rng)
    common = ["--inception-logits", str(inception_file), "--no-fid", "--no-lpips"]
    out = tmp_path / "report_bottle"
    assert (
        _eval(["--generated", str(tmp_path / "gen"), "--real", str(tmp_path / "mvtec"), "--out", str(out), *common])
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    expected = torch_fidelity.calculate_metrics(
        input1=str(tmp_path / "gen" / "bottle" / "test" / "crack"),
        isc=True,
        cuda=False,
        cache=False,
        verbose=False,
        feature_extractor_weights_path=str(inception_file),
    )["inception_score_mean"]
    ours = report["types"]["crack"]["inception_score"]
    assert ours > 1.05 and ours == pytest.approx(expected, rel=1e-5)
    assert report["dataset"] == "MVTec AD" and report["mean"]["inception_score"] == pytest.approx(ours)
    markdown = (out / "report.md").read_text()
    assert "Inception Score network: `pt_inception-random.pth (sha256 " in markdown
    assert "real data layout: MVTec AD layout" in markdown
    assert f"| IS ↑ | {ours:.2f} | 1.93 | 1.80 | 1.88 |" in markdown  # ours, DualAnoDiff, AnomalyDiffusion, SeaS
    assert "| IC-LPIPS ↑ | – | 0.38 | 0.32 | 0.34 |" in markdown and "checkpoint that scores best on the" in markdown
    assert "rounds up (`--split authors`)" in markdown

    out_visa = tmp_path / "report_candle"
    assert (
        _eval(
            [
                "--generated",
                str(tmp_path / "gen_visa"),
                "--real",
                str(tmp_path / "visa"),
                "--out",
                str(out_visa),
                *common,
            ]
        )
        == 0
    )
    visa = json.loads((out_visa / "report.json").read_text())
    assert visa["dataset"] == "VisA" and visa["types"]["anomaly"]["real_train"] == 2
    assert visa["types"]["anomaly"]["real_test"] == 4
    visa_md = (out_visa / "report.md").read_text()
    assert (
        "## Beside the published numbers (VisA)" in visa_md
        and "| metric | ours (candle, mean of its types) | SeaS |" in visa_md
    )
    assert "| 1.27 |" in visa_md and "1.93" not in visa_md

    # too few generated images for 10 splits: skipped with the reason
    _generated(tmp_path / "few", "bottle", "crack", 4, rng)
    assert (
        _eval(
            [
                "--generated",
                str(tmp_path / "few"),
                "--real",
                str(tmp_path / "mvtec"),
                "--out",
                str(tmp_path / "few_out"),
                *common,
            ]
        )
        == 0
    )
    few = json.loads((tmp_path / "few_out" / "report.json").read_text())
    assert "Inception Score skipped for crack: 4 generated images, 10 needed" in few["notes"]

    # per category, then overall: (IS_bottle + IS_cable) / 2, beside the dataset's published numbers
    _mvtec(tmp_path / "mvtec", "cable", "bent_wire", rng)
    _generated(tmp_path / "gen", "cable", "bent_wire", 10, rng)
    out_cable = tmp_path / "report_cable"
    assert (
        _eval(
            [
                "--generated",
                str(tmp_path / "gen"),
                "--real",
                str(tmp_path / "mvtec"),
                "--out",
                str(out_cable),
                "--category",
                "cable",
                *common,
            ]
        )
        == 0
    )
    cable = json.loads((out_cable / "report.json").read_text())
    assert _eval(["--summary", str(out / "report.json"), str(out_cable), "--out", str(tmp_path / "summary")]) == 0
    summary = json.loads((tmp_path / "summary" / "summary.json").read_text())
    mean = (ours + cable["mean"]["inception_score"]) / 2
    assert summary["overall"]["inception_score"] == pytest.approx(mean)
    text = (tmp_path / "summary" / "summary.md").read_text()
    assert "| **overall** |" in text and f"| IS ↑ | {mean:.2f} | 1.93 |" in text and "mean of 2 categories" in text
    assert _eval(["--summary", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s2")]) == 2
    assert _eval(["--summary", str(out), str(out_visa), "--out", str(tmp_path / "s3")]) == 2  # MVTec AD + VisA


def test_comparison_table_units_and_datasets_without_papers():
    from anodiff.metrics.published import comparison_table

    lines = "\n".join(comparison_table({"pixel_auroc": 0.987, "inception_score": 1.5}, "MVTec AD", "all"))
    assert "| pixel AUROC ↑ | 98.7 | 99.1 | 99.1 | – |" in lines  # ours in [0, 1], the papers in percent
    assert "| IS ↑ | 1.50 | 1.93 | 1.80 | 1.88 |" in lines and "| image AP ↑ | – | – | 99.7 | – |" in lines
    assert "No paper reports numbers on BTAD" in "\n".join(comparison_table({"inception_score": 1.5}, "BTAD", "all"))
