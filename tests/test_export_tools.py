"""``anodiff export --format anomalib | asbench``: each layout read back by the rules of the tool that reads it.

anomalib is not installed for this (its install pulls Lightning and more, well past the test budget); the reader
below follows anomalib's ``make_folder_dataset`` (``anomalib/data/datasets/image/folder.py``): recursive listing by
torchvision's image suffixes, one sort over every path, masks given to the abnormal images in that order, a mask
whose name lacks its image's stem refused. The ASBench reader follows its ``MVTecDataset_AD``
(``destseg/data/mvtec_dataset.py``): ``sorted(glob(dir + "/*.jpg"))`` per folder, paired by position, masks / 255.
"""

from __future__ import annotations

import glob
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from test_export import good_pairs, photo, run_cli, write_tree

from anodiff.dataset import export


def anomalib_folder(root: Path, normal: str, abnormal: str, normal_test: str, mask: str) -> dict:
    """The samples anomalib's Folder datamodule builds from these folders: train normals, test items with masks."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    rows = []
    for label, folder in (("normal", normal), ("abnormal", abnormal), ("normal_test", normal_test), ("mask", mask)):
        files = [f for f in (root / folder).glob("**/*") if f.suffix in IMG_EXTENSIONS and not f.is_dir()]
        assert files, f"anomalib: Found 0 images in {root / folder}"
        rows += [(str(f), label) for f in files]
    rows.sort(key=lambda row: row[0])
    masks = [path for path, label in rows if label == "mask"]
    abnormal_rows = [path for path, label in rows if label == "abnormal"]
    paired = list(zip(abnormal_rows, masks[: len(abnormal_rows)]))
    for image, mask_path in paired:
        assert Path(image).stem in Path(mask_path).stem, "anomalib MisMatchError: mask names do not follow images"
    return {
        "train": [p for p, label in rows if label == "normal"],
        "test_normal": [p for p, label in rows if label == "normal_test"],
        "test_abnormal": paired,
    }


def _tree(root: Path) -> tuple[Path, Path, list]:
    """A generated tree with two types, one pair made into a source photo (its sidecar names it); normal images."""
    pairs = good_pairs()
    write_tree(root / "gen", pairs[:3], anomaly="crack")
    write_tree(root / "gen", pairs[:2], anomaly="hole")
    normals = root / "normals"
    normals.mkdir()
    for i in range(6):
        (normals / f"{i:03d}.png").write_bytes(export.encode_png(photo(seed=i)))
    meta = root / "gen" / "bottle" / "meta" / "crack" / "001.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"version": 1, "source": "004.png", "source_root": str(normals)}))
    return root / "gen", normals, pairs


def test_anomalib_folder_layout_reads_back_for_validation_and_test(tmp_path):
    gen, normals, pairs = _tree(tmp_path)
    out = tmp_path / "anomalib"
    assert (
        run_cli(["export", "--from", str(gen), "--out", str(out), "--format", "anomalib", "--normal-dir", str(normals)])
        == 0
    )
    root = out / "bottle"
    seen = {}
    for split in ("validation", "test"):
        samples = anomalib_folder(root, "normal", f"{split}/abnormal", f"{split}/normal", f"{split}/mask")
        assert [Path(p).name for p in samples["train"]] == ["000.png", "001.png", "002.png", "003.png"]
        assert [Path(p).name for p in samples["test_normal"]] == (["004.png"] if split == "validation" else ["005.png"])
        for image, mask_path in samples["test_abnormal"]:
            kind, index = Path(image).stem.split("_")
            original = gen / "bottle" / "test" / kind / f"{index}.png"
            assert Path(image).read_bytes() == original.read_bytes()
            mask = np.asarray(Image.open(mask_path).convert("L")) / 255.0  # anomalib's read_mask
            np.testing.assert_array_equal(mask > 0.5, pairs[int(index)][1])
            seen[Path(image).stem] = split
    assert seen == {
        "crack_000": "validation",
        "crack_001": "validation",
        "crack_002": "test",
        "hole_000": "validation",
        "hole_001": "test",
    }
    assert (
        run_cli(["export", "--from", str(gen), "--out", str(out), "--format", "anomalib", "--normal-dir", str(normals)])
        == 2
    )  # (not empty: refused, nothing mixed)
    assert run_cli(["export", "--from", str(gen), "--out", str(tmp_path / "x"), "--format", "anomalib"]) == 2


def test_asbench_layout_reads_back_as_its_dataset_does(tmp_path):
    gen, normals, pairs = _tree(tmp_path)
    out = tmp_path / "asbench"
    assert (
        run_cli(["export", "--from", str(gen), "--out", str(out), "--format", "asbench", "--normal-dir", str(normals)])
        == 0
    )
    root = out / "bottle"
    ori, aug, masks = (sorted(glob.glob(str(root / sub) + "/*.jpg")) for sub in ("image", "augmented", "mask"))
    assert len(ori) == len(aug) == len(masks) == 5
    assert [Path(p).name for p in aug] == [Path(p).name for p in ori] == [Path(p).name for p in masks]
    for o, a, m in zip(ori, aug, masks):
        kind, index = Path(a).stem.split("_")
        image = np.array(Image.open(a).convert("RGB"))
        mask = np.array(Image.open(m).convert("L")) / 255
        origin = np.array(Image.open(o).convert("RGB"))
        assert image.shape == origin.shape == (256, 256, 3) and mask.shape == (256, 256)
        expected = cv2.resize(pairs[int(index)][1].astype(np.float32), (256, 256), interpolation=cv2.INTER_AREA) >= 0.5
        assert ((mask > 0.5) == expected).mean() > 0.999 and np.abs(mask - expected).max() < 0.1
        generated = cv2.imread(str(gen / "bottle" / "test" / kind / f"{index}.png"))[..., ::-1]
        assert (
            np.abs(image - cv2.resize(generated, (256, 256), interpolation=cv2.INTER_AREA).astype(float)).mean() < 4
        )  # JPEG, as ASBench reads
        if Path(a).stem == "crack_001":  # its sidecar names normal 004 as its source photo
            source = cv2.resize(photo(seed=4), (256, 256), interpolation=cv2.INTER_AREA) * 255
            assert np.abs(origin - source).mean() < 4
    with pytest.raises(FileExistsError, match="is not empty"):
        from anodiff.dataset.tools import export_asbench
        from anodiff.dataset.tree import find_pairs

        export_asbench(find_pairs(gen), out)
