"""Dataset layouts (``anodiff.data.layouts``) on tiny synthetic trees: MVTec AD, MPDD, BTAD, VisA (with and without its
split CSV) and plain; detection, the pairs each yields, normal images, and the messages for unreadable folders."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from anodiff.data import fewshot as data
from anodiff.data.fewshot import DataError, Sample
from anodiff.data.layouts import detect_layout

S = 32


def _image(seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((S, S, 3)) * 120 + 60).astype(np.uint8)


def _mask() -> np.ndarray:
    m = np.zeros((S, S), np.uint8)
    m[8:16, 10:20] = 255
    return m


def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array), path
    return path


def mvtec_like(root: Path, category: str, kinds=("crack",), n=4, normal="good", mask_suffix="_mask", ext=".png"):
    """``<category>/test/<kind>/NNN<ext>`` with ``ground_truth/<kind>/NNN<mask_suffix>.png`` and normal folders."""
    for kind in kinds:
        for i in range(n):
            _write(root / category / "test" / kind / f"{i:03d}{ext}", _image(i))
            _write(root / category / "ground_truth" / kind / f"{i:03d}{mask_suffix}.png", _mask())
    for i in range(3):
        _write(root / category / "train" / normal / f"{i:03d}{ext}", _image(10 + i))
    _write(root / category / "test" / normal / f"900{ext}", _image(20))
    return root


def visa(root: Path, categories=("candle", "pcb1"), n=4, normals=6, with_csv=True) -> Path:
    """VisA's tree: ``<category>/Data/Images/{Anomaly,Normal}/*.JPG``, ``Data/Masks/Anomaly/*.png``, and
    ``split_csv/1cls.csv`` putting the first four normals in train, the rest and every anomaly in test."""
    rows = []
    for category in categories:
        base = root / category / "Data"
        for i in range(n):
            image = _write(base / "Images" / "Anomaly" / f"{i:03d}.JPG", _image(i))
            mask = _write(base / "Masks" / "Anomaly" / f"{i:03d}.png", _mask())
            rows.append(
                [category, "test", "anomaly", image.relative_to(root).as_posix(), mask.relative_to(root).as_posix()]
            )
        for i in range(normals):
            image = _write(base / "Images" / "Normal" / f"{i:04d}.JPG", _image(30 + i))
            rows.append([category, "train" if i < 4 else "test", "normal", image.relative_to(root).as_posix(), ""])
    if with_csv:
        (root / "split_csv").mkdir(parents=True)
        with open(root / "split_csv" / "1cls.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["object", "split", "label", "image", "mask"])
            writer.writerows(rows[::-1])  # any row order: samples come back sorted by file name
    return root


def test_mvtec_and_mpdd_are_told_apart_by_category_names(tmp_path):
    mvtec = mvtec_like(tmp_path / "mvtec", "bottle", kinds=("crack", "hole"))
    layout = detect_layout(mvtec)
    assert layout.name == "mvtec" and layout.dataset == "MVTec AD" and "MVTec AD layout" in layout.describe()
    assert data.list_jobs(mvtec) == [("bottle", "crack"), ("bottle", "hole")]
    mpdd = mvtec_like(tmp_path / "mpdd", "metal_plate", kinds=("scratch",))
    assert detect_layout(mpdd).dataset == "MPDD"
    samples = data.find_samples(mpdd, "metal_plate", "scratch")
    assert samples[0] == Sample(
        mpdd / "metal_plate/test/scratch/000.png", mpdd / "metal_plate/ground_truth/scratch/000_mask.png"
    )
    assert detect_layout(mvtec_like(tmp_path / "own", "widget")).dataset == "MVTec-style"


def test_btad_ok_ko_folders_and_masks_named_as_images(tmp_path):
    root = mvtec_like(tmp_path / "btad", "03", kinds=("ko",), normal="ok", mask_suffix="", ext=".bmp")
    layout = detect_layout(root)
    assert layout.dataset == "BTAD" and data.list_jobs(root) == [("03", "ko")]  # "ok" is the normal folder
    samples = data.find_samples(root, "03", "ko")
    assert [(s.image.name, s.mask.name) for s in samples][:2] == [("000.bmp", "000.png"), ("001.bmp", "001.png")]
    assert data.validate_samples(samples) == samples
    assert [p.name for p in data.normal_images(root, "03")] == ["000.bmp", "001.bmp", "002.bmp"]
    with pytest.raises(ValueError, match="normal images"):
        data.find_samples(root, "03", "ok")


def test_visa_with_its_split_csv(tmp_path):
    from anodiff.metrics.tree import real_normals, real_split

    root = visa(tmp_path / "visa")
    layout = detect_layout(root)
    assert layout.dataset == "VisA" and "split by split_csv/1cls.csv" in layout.describe()
    assert data.list_jobs(root) == [("candle", "anomaly"), ("pcb1", "anomaly")]
    samples = data.find_samples(root, "candle", "anomaly")
    assert [(s.image.name, s.mask.name) for s in samples] == [(f"{i:03d}.JPG", f"{i:03d}.png") for i in range(4)]
    assert all(s.image.parent == root / "candle/Data/Images/Anomaly" for s in samples)
    assert data.validate_samples(samples) == samples
    # train normals are the CSV's train rows, test normals its test rows; the anomaly split is the usual third
    assert [p.name for p in data.normal_images(root, "candle")] == ["0000.JPG", "0001.JPG", "0002.JPG", "0003.JPG"]
    assert [p.name for p in real_normals(root, "candle", "test")] == ["0004.JPG", "0005.JPG"]
    split = real_split(root, "candle", "anomaly")
    assert [p.name for p, _ in split.train] == ["000.JPG"] and len(split.test) == 3
    with pytest.raises(FileNotFoundError, match="use anomaly type 'anomaly'"):
        data.find_samples(root, "candle", "crack")
    with pytest.raises(FileNotFoundError, match="available: candle, pcb1"):
        data.find_samples(root, "capsules", "anomaly")


def test_visa_folders_without_the_csv(tmp_path):
    root = visa(tmp_path / "visa", categories=("pcb1",), normals=10, with_csv=False)
    layout = detect_layout(root)
    assert layout.dataset == "VisA" and "folders only" in layout.describe()
    assert [s.mask.name for s in data.find_samples(root, "pcb1", "anomaly")] == [f"{i:03d}.png" for i in range(4)]
    train, test = layout.normals("pcb1", "train"), layout.normals("pcb1", "test")
    assert len(train) == 9 and [p.name for p in test] == ["0009.JPG"] and not set(train) & set(test)


def test_a_bad_split_csv_names_its_columns(tmp_path):
    root = visa(tmp_path / "visa", categories=("candle",), with_csv=False)
    (root / "split_csv").mkdir()
    (root / "split_csv" / "1cls.csv").write_text("name,kind\nx,y\n")
    with pytest.raises(DataError, match="1cls.csv: no column image, label, mask, object, split"):
        data.find_samples(root, "candle", "anomaly")


def test_plain_layout_is_detected(tmp_path):
    root = tmp_path / "plain"
    _write(root / "images" / "a.png", _image(0))
    _write(root / "masks" / "a.png", _mask())
    layout = detect_layout(root)
    assert layout.name == "plain" and "plain images/ + masks/" in layout.describe()
    assert [s.mask.name for s in data.find_samples(root)] == ["a.png"]
    with pytest.raises(ValueError, match="without --all"):
        data.list_jobs(root)


def test_unreadable_folders_name_the_expected_layouts(tmp_path):
    (tmp_path / "photos" / "misc").mkdir(parents=True)
    with pytest.raises(
        DataError,
        match=r"cannot read .*photos as a dataset \(it has subfolders misc\); expected one of: <root>/images.*"
        r"ground_truth/<type>.*train/ok \(BTAD\).*Data/Masks/Anomaly \(VisA\)",
    ):
        data.find_samples(tmp_path / "photos", "misc", "crack")
    category = mvtec_like(tmp_path / "mvtec", "bottle") / "bottle"
    with pytest.raises(DataError, match="one category; give its parent folder as the dataset folder and 'bottle'"):
        data.list_jobs(category)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        detect_layout(tmp_path / "nowhere")


def test_train_dry_run_says_which_layout_it_found(tmp_path, capsys):
    from anodiff.cli import main

    root = mvtec_like(tmp_path / "btad", "02", kinds=("ko",), normal="ok", mask_suffix="", ext=".png")
    argv = ["train", "--base", "unused", "--data", str(root), "--category", "02", "--anomaly", "ko", "--output", "x"]
    assert main([*argv, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert f"--data: BTAD layout at {root} (1 category: 02)" in printed and "000.png" in printed
    assert main(["train", "--base", "unused", "--data", str(tmp_path), "--all", "--output", "x", "--dry-run"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_training_reads_a_visa_tree(tmp_path):
    """The trainer finds its pairs through the detected layout: a 1-step run on VisA's folders writes a model."""
    from accelerate.state import AcceleratorState
    from tiny_diffusers import save_tiny_sd15

    from anodiff.train.trainer import TrainConfig, Trainer

    AcceleratorState._reset_state(True)
    root = visa(tmp_path / "visa", categories=("candle",), n=3)
    config = TrainConfig(
        base=str(save_tiny_sd15(tmp_path / "sd15")),
        data=str(root),
        category="candle",
        anomaly="anomaly",
        output=str(tmp_path / "run"),
        steps=1,
        batch_size=1,
        resolution=32,
        rank=2,
        text_rank=2,
        checkpoint_every=1000,
        preview_every=1000,
        progress=False,
    )
    trainer = Trainer(config)
    assert [s.image.name for s in trainer.samples] == ["000.JPG"]
    assert trainer.run().is_file()


def test_generation_takes_bcm_backgrounds_from_a_dataset_root(tmp_path, sd_dir):
    """--normal-dir accepts a VisA root: the category's training normals (the split CSV's train rows) only."""
    from test_pipeline import dual_file

    from anodiff.generate.run import generate, normal_images

    root = visa(tmp_path / "visa", categories=("candle",), normals=6)
    assert [p.name for p in normal_images(root, "candle")] == ["0000.JPG", "0001.JPG", "0002.JPG", "0003.JPG"]
    folder = root / "candle" / "Data" / "Images" / "Normal"
    assert len(normal_images(folder)) == 6  # a plain folder: every image in it
    with pytest.raises(FileNotFoundError, match="not a dataset root with normal images of category 'nope'"):
        normal_images(root, "nope")
    bcm = dual_file(bcm=True).save(tmp_path / "bcm.safetensors")
    report = generate(
        sd_dir,
        bcm,
        tmp_path / "out",
        1,
        category="candle",
        normal_dir=root,
        steps=1,
        scheduler="ddim",
        size=32,
        mask_method="grey",
        progress=False,
    )
    assert report.written == 1
