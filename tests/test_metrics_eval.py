"""Detection scores, localisation training and the eval report on tiny fake trees."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# -- detection scores --------------------------------------------------------------------------------------------


def test_auroc_hand_cases():
    from anodiff.metrics.detection import auroc

    labels = np.array([0, 0, 1, 1])
    assert auroc(labels, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert auroc(labels, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert auroc(labels, [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert auroc(labels, [0.1, 0.4, 0.35, 0.8]) == 0.75  # 3 of 4 (pos, neg) pairs ordered right
    with pytest.raises(ValueError, match="both classes"):
        auroc([1, 1], [0.1, 0.2])


def test_average_precision_and_f1_on_a_known_ranking():
    from anodiff.metrics.detection import average_precision, f1_max

    # ranked by score: pos, neg, pos, neg -> precision 1 at recall 1/2, 2/3 at recall 1
    labels, scores = np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.1])
    assert average_precision(labels, scores) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # F1 at the 3 cut-offs: (P, R) = (1, .5) -> 2/3; (.5, .5) -> .5; (2/3, 1) -> .8
    assert f1_max(labels, scores) == pytest.approx(0.8)
    assert average_precision([1, 0], [0.3, 0.3]) == pytest.approx(0.5)  # a tie is one threshold


def test_detection_scores_equal_brute_force_on_random_ties():
    """AUROC by counting (pos, neg) pairs, AP and F1 by trying every threshold: the definitions, not a library."""
    from anodiff.metrics.detection import auroc, average_precision, f1_max

    rng = np.random.default_rng(3)
    labels = rng.random(60) < 0.3
    scores = np.round(rng.random(60) + 0.4 * labels, 1)  # rounded: many ties
    pos, neg = scores[labels], scores[~labels]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert auroc(labels, scores) == pytest.approx(pairs / (len(pos) * len(neg)), abs=1e-12)
    thresholds = np.unique(scores)[::-1]
    precision = np.array([labels[scores >= t].mean() for t in thresholds])
    recall = np.array([labels[scores >= t].sum() / labels.sum() for t in thresholds])
    assert average_precision(labels, scores) == pytest.approx(np.sum(np.diff(np.r_[0, recall]) * precision))
    assert f1_max(labels, scores) == pytest.approx(np.max(2 * precision * recall / (precision + recall)))


def test_au_pro_region_cases():
    from anodiff.metrics.detection import au_pro

    mask = np.zeros((6, 6), bool)
    mask[0:2, 0:2] = True  # region A
    mask[4:6, 4:6] = True  # region B
    perfect = mask.astype(float)
    assert au_pro([mask], [perfect]) == pytest.approx(1.0)
    assert au_pro([mask], [1 - perfect]) == pytest.approx(0.0)
    # A found before any normal pixel, B only after every normal pixel: PRO = 0.5 over the whole FPR range
    half = np.where(mask, 0.0, 0.5)
    half[0:2, 0:2] = 1.0
    assert au_pro([mask], [half]) == pytest.approx(0.5)
    # regions count equally whatever their size: a big found region and a tiny missed one still give 0.5
    big = np.zeros((10, 10), bool)
    big[:5, :5] = True
    big[9, 9] = True
    amap = np.where(big, 1.0, 0.5)
    amap[9, 9] = 0.0
    assert au_pro([big], [amap]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="defect region"):
        au_pro([np.zeros((4, 4))], [np.zeros((4, 4))])


# -- fake trees --------------------------------------------------------------------------------------------------


def _write(path, array):
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), array[..., ::-1] if array.ndim == 3 else array)


def _fake_trees(root, size=32, kinds=("crack", "dent"), per_kind=6, generated=6):
    """A real MVTec-style category and a generated tree as anodiff generate writes it: bright squares on grey."""
    rng = np.random.default_rng(0)

    def normal():
        return (100 + rng.integers(0, 20, (size, size, 3))).astype(np.uint8)

    def anomalous():
        image, mask = normal(), np.zeros((size, size), np.uint8)
        y, x = rng.integers(0, size - 8, 2)
        image[y : y + 8, x : x + 8] = 240
        mask[y : y + 8, x : x + 8] = 255
        return image, mask

    real, gen = root / "real" / "widget", root / "gen" / "widget"
    for i in range(10):
        _write(real / "train" / "good" / f"{i:03d}.png", normal())
    for i in range(4):
        _write(real / "test" / "good" / f"{i:03d}.png", normal())
    for kind in kinds:
        for i in range(per_kind):
            image, mask = anomalous()
            _write(real / "test" / kind / f"{i:03d}.png", image)
            _write(real / "ground_truth" / kind / f"{i:03d}_mask.png", mask)
        for i in range(generated):
            image, mask = anomalous()
            part = np.full_like(image, 128)
            part[mask > 0] = image[mask > 0]
            _write(gen / "test" / kind / f"{i:03d}.png", image)
            _write(gen / "ground_truth" / kind / f"{i:03d}_mask.png", mask)
            _write(gen / "anomaly_part" / kind / f"{i:03d}.png", part)
    return root / "real", root / "gen"


def test_trees_and_localization_training(tmp_path):
    from anodiff.metrics import localization as loc
    from anodiff.metrics.tree import generated_folder, generated_pairs, real_split

    real, gen = _fake_trees(tmp_path)
    folder, category = generated_folder(gen, None)
    assert category == "widget"
    pairs = generated_pairs(folder)
    assert sorted(pairs) == ["crack", "dent"] and len(pairs["crack"]) == 6 and pairs["crack"][0].part is not None
    split = real_split(real, "widget", "crack")
    assert [p.name for p, _ in split.train] == ["000.png", "001.png"] and len(split.test) == 4
    data = loc.build_data(pairs, real, "widget", val_share=0.2)
    assert len(data.normals) == 8 and not {p for p, _ in data.validation} & {p for p, _ in data.test}
    config = loc.LocalizationConfig(size=32, base_width=2, epochs=2, samples_per_epoch=8, batch_size=4, pool=5)
    result = loc.train_localization(data, config, progress=False)
    assert result.best_epoch in (1, 2) and len(result.history) == 2
    assert set(result.test) == {
        "image_auroc",
        "image_ap",
        "image_f1_max",
        "pixel_auroc",
        "pixel_ap",
        "pixel_f1_max",
        "au_pro",
    }
    assert all(0.0 <= v <= 1.0 for v in result.test.values())


def test_unet_shapes_and_focal_loss():
    import torch

    from anodiff.metrics.unet import DiscriminativeUNet, focal_loss, image_scores

    net = DiscriminativeUNet(base_width=2)
    assert net(torch.rand(2, 3, 64, 64)).shape == (2, 2, 64, 64)
    with pytest.raises(ValueError, match="multiple of 32"):
        net(torch.rand(1, 3, 48, 48))
    target = torch.zeros(1, 1, 4, 4)
    confident = torch.stack([torch.full((4, 4), 10.0), torch.full((4, 4), -10.0)])[None]
    assert focal_loss(confident, target).item() < 1e-6 < focal_loss(-confident, target).item()
    # at p_t = 1/2 the loss is (1/2)^2 * log 2
    assert focal_loss(torch.zeros(1, 2, 4, 4), target).item() == pytest.approx(0.25 * math.log(2), rel=1e-3)
    prob = torch.zeros(1, 8, 8)
    prob[0, 2:5, 2:5] = 1.0
    assert image_scores(prob, pool=3).item() == pytest.approx(1.0)


# -- report ------------------------------------------------------------------------------------------------------


def _eval_cli(argv):
    import argparse

    from anodiff.cli.eval import register

    parser = argparse.ArgumentParser(prog="anodiff")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_eval_report_on_a_fake_tree(tmp_path, monkeypatch, capsys):
    import json

    from anodiff.metrics import assets

    monkeypatch.setattr(assets, "REPO_CACHE_DIR", tmp_path / "no-cache")
    monkeypatch.setattr(assets, "PACK_MODELS_DIR", tmp_path / "no-models")
    monkeypatch.setattr("torch.hub.get_dir", lambda: str(tmp_path / "no-hub"))
    for var in ("ANODIFF_INCEPTION", "ANODIFF_VGG16", "ANODIFF_LPIPS_HEADS", "ANODIFF_INCEPTION_LOGITS"):
        monkeypatch.delenv(var, raising=False)
    real, gen = _fake_trees(tmp_path)
    out = tmp_path / "report"
    assert _eval_cli(["eval", "--generated", str(gen), "--real", str(real), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["category"] == "widget" and sorted(report["types"]) == ["crack", "dent"]
    row = report["types"]["crack"]
    assert row["generated"] == 6 and row["real_train"] == 2 and row["real_test"] == 4 and row["empty_masks"] == 0
    assert row["alignment_iou"] > 0.5 > row["chance_iou"]  # masks match their own squares, not the others'
    assert 0.0 <= row["novelty_share"] <= 1.0 and "fid" not in row and "ic_lpips" not in row
    notes = " ".join(report["notes"])
    assert "FID/KID skipped" in notes and "fetch-models" in notes and "IC-LPIPS skipped" in notes
    assert "Inception Score skipped" in notes and "pt_inception-2015-12-05-6726825d.pth" in notes
    assert "--inception-logits" in notes and "inception_score" not in row
    markdown = (out / "report.md").read_text()
    assert "| crack |" in markdown and "## Not computed" in markdown and "How to read this" in markdown
    # a category MVTec AD does not have: the layout is named, and no paper's numbers are put beside ours
    assert "real data layout: MVTec-style layout" in markdown and report["dataset"] == "MVTec-style"
    assert "No paper reports numbers on MVTec-style" in markdown
    from anodiff.metrics.plots import matplotlib_available

    assert (out / "metrics_by_type.png").is_file() == matplotlib_available()
    assert _eval_cli(["eval", "--real", str(real), "--out", str(out)]) == 2
    assert "--generated required" in capsys.readouterr().err
    assert (
        _eval_cli(["eval", "--generated", str(gen), "--real", str(real), "--out", str(out), "--category", "nut"]) == 2
    )
    assert "no generated category 'nut'" in capsys.readouterr().err
