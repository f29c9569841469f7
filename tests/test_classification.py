"""Downstream classification: ResNet-34 from a torchvision file or from scratch, learning a colour-coded toy task
from 'generated' images and scoring the 'real' held-out ones; and its section in the eval report."""

from __future__ import annotations

import argparse
import json

import cv2
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

S = 32
COLOURS = {"blue_spot": (255, 40, 40), "red_spot": (40, 40, 255)}  # BGR for cv2


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def _spot(rng, colour):
    image = np.full((S, S, 3), 128, np.uint8)
    mask = np.zeros((S, S), np.uint8)
    y, x = rng.integers(0, S - 12, 2)
    image[y : y + 12, x : x + 12] = colour
    mask[y : y + 12, x : x + 12] = 255
    return image, mask


def _trees(root, generated=8, real=6):
    rng = np.random.default_rng(0)
    for kind, colour in COLOURS.items():
        for i in range(real):
            image, mask = _spot(rng, colour)
            _write(root / "real" / "bottle" / "test" / kind / f"{i:03d}.png", image)
            _write(root / "real" / "bottle" / "ground_truth" / kind / f"{i:03d}_mask.png", mask)
        for i in range(generated):
            image, mask = _spot(rng, colour)
            _write(root / "gen" / "bottle" / "test" / kind / f"{i:03d}.png", image)
            _write(root / "gen" / "bottle" / "ground_truth" / kind / f"{i:03d}_mask.png", mask)
    for split in ("train", "test"):
        for i in range(3):
            _write(root / "real" / "bottle" / split / "good" / f"{i:03d}.png", np.full((S, S, 3), 128, np.uint8))
    return root / "real", root / "gen"


def test_resnet34_from_a_torchvision_file_or_scratch(tmp_path):
    import torchvision

    from anodiff.metrics.classification import build_resnet34

    torch.manual_seed(1)
    state = torchvision.models.resnet34(weights=None).state_dict()
    path = tmp_path / "resnet34-b627a593.pth"
    torch.save(state, path)
    model, backbone = build_resnet34(3, path)
    assert torch.equal(model.conv1.weight, state["conv1.weight"]) and model.fc.out_features == 3
    assert "from resnet34-b627a593.pth" in backbone
    assert "from scratch" in build_resnet34(2)[1]
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="wrong.pth: not torchvision's ResNet-34"):
        build_resnet34(2, wrong)
    with pytest.raises(FileNotFoundError, match="is not a file; give torchvision's resnet34-b627a593.pth"):
        build_resnet34(2, tmp_path / "nowhere.pth")


def test_classifier_learns_types_from_generated_images_and_scores_real_ones(tmp_path):
    from anodiff.metrics.classification import ClassificationConfig, classification_items, train_classifier
    from anodiff.metrics.tree import generated_pairs

    real, gen = _trees(tmp_path)
    types, train, test = classification_items(generated_pairs(gen / "bottle"), real, "bottle")
    assert types == ["blue_spot", "red_spot"] and len(train) == 16 and len(test) == 8  # 2 of 6 real per type train
    config = ClassificationConfig(size=S, epochs=12, batch_size=4, lr=1e-3)
    result = train_classifier(types, train, test, config, progress=False)
    assert result.accuracy == 1.0 and result.per_type == {"blue_spot": 1.0, "red_spot": 1.0}
    assert len(result.history) == 12 and result.test_images == 8 and result.train_images == 16
    with pytest.raises(ValueError, match="at least two anomaly types"):
        train_classifier(types[:1], train, test, config, progress=False)


def test_eval_reports_the_classification(tmp_path, monkeypatch):
    from anodiff.cli.eval import register

    monkeypatch.setattr("torch.hub.get_dir", lambda: str(tmp_path / "no-hub"))
    real, gen = _trees(tmp_path, generated=4)
    parser = argparse.ArgumentParser(prog="anodiff")
    register(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "out"
    args = parser.parse_args(
        [
            "eval",
            "--generated",
            str(gen),
            "--real",
            str(real),
            "--out",
            str(out),
            "--no-fid",
            "--no-lpips",
            "--no-is",
            "--classification",
            "--cls-epochs",
            "1",
            "--cls-size",
            "32",
        ]
    )
    assert args.func(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["classification"]["test_images"] == 8 and 0.0 <= report["classification"]["accuracy"] <= 1.0
    markdown = (out / "report.md").read_text()
    assert "## Downstream classification" in markdown and "ResNet-34 trained from scratch" in markdown
    assert "| blue_spot |" in markdown
