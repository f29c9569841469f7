"""Pair filter (``anodiff.dataset.filter``) and dataset export (``anodiff.dataset.export``) on constructed pairs and
fake trees."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as rle_tools
from pycocotools.coco import COCO

from anodiff.common import assets
from anodiff.data.masks import U2NetP
from anodiff.dataset import export
from anodiff.dataset import filter as filtering

H, W = 96, 128
CENTRE, RADIUS = (64, 48), 34


def disc() -> np.ndarray:
    """(H, W) bool: the object, a disc in the middle."""
    obj = np.zeros((H, W), np.uint8)
    cv2.circle(obj, CENTRE, RADIUS, 1, -1)
    return obj.astype(bool)


def photo(seed: int = 0) -> np.ndarray:
    """(H, W, 3) float: the normal photo, a textured red disc on a light background (salient for U²-Net-P)."""
    rng = np.random.default_rng(seed)
    image = np.full((H, W, 3), 0.9, np.float32)
    texture = rng.uniform(0.7, 1.0, (H, W, 1)).astype(np.float32)
    image[disc()] = (np.array([0.8, 0.15, 0.1], np.float32) * texture)[disc()]
    return image


def blob(centre: tuple[int, int], axes: tuple[int, int] = (8, 5), angle: float = 30.0) -> np.ndarray:
    region = np.zeros((H, W), np.uint8)
    cv2.ellipse(region, centre, axes, angle, 0, 360, 1, -1)
    return region.astype(bool)


def paint(source: np.ndarray, region: np.ndarray, colour=(0.1, 0.35, 0.1), seed: int = 0) -> np.ndarray:
    """``source`` with ``region`` painted, plus VAE-like noise everywhere."""
    image = source.copy()
    image[region] = colour
    image += np.random.default_rng(seed).normal(0.0, 0.02, image.shape).astype(np.float32)
    return np.clip(image, 0.0, 1.0)


def good_pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """Defects of several shapes, sizes and colours on the object, masks where they are."""
    out = []
    for k, (centre, axes, colour) in enumerate(
        [
            ((64, 48), (8, 5), (0.1, 0.35, 0.1)),
            ((50, 40), (14, 3), (0.05, 0.05, 0.05)),
            ((78, 58), (5, 5), (0.95, 0.9, 0.2)),
            ((60, 30), (20, 8), (0.4, 0.4, 0.8)),
        ]
    ):
        region = blob(centre, axes, 15.0 * k)
        out.append((paint(photo(), region, colour, seed=k), region))
    return out


def test_good_pairs_are_kept():
    for image, mask in good_pairs():
        assert filtering.check_pair(image, mask, disc(), photo()) is None
        assert filtering.check_pair(np.round(image * 255).astype(np.uint8), mask.astype(np.uint8) * 255) is None
    images, masks = zip(*good_pairs())
    kept, dropped = filtering.filter_pairs(np.stack(images), np.stack(masks).astype(np.float32), disc(), photo())
    assert kept == [0, 1, 2, 3] and dropped == {}


def bad_pair(reason: str) -> tuple[np.ndarray, np.ndarray]:
    if reason == filtering.EMPTY:
        return paint(photo(), blob((64, 48))), np.zeros((H, W), bool)
    if reason == filtering.TOO_SMALL:
        region = np.zeros((H, W), bool)
        region[48, 64:67] = True  # 3 px: 0.024% of the image
        return paint(photo(), region), region
    if reason == filtering.TOO_LARGE:
        region = np.zeros((H, W), bool)
        region[:, : int(W * 0.7)] = True
        return paint(photo(), region), region
    if reason == filtering.PIECES:
        region = np.zeros((H, W), bool)
        for k in range(6):  # six separate specks on the object
            region |= blob((46 + 7 * k, 40 + 3 * (k % 2)), (2, 2), 0.0)
        return paint(photo(), region), region
    if reason == filtering.OFF_OBJECT:
        region = blob((12, 12), (8, 6))  # in the background corner, and painted there: only the object check fails
        return paint(photo(), region), region
    region = blob((64, 48))
    return paint(photo(), blob((50, 30))), region  # the defect is drawn elsewhere on the object than the mask says


@pytest.mark.parametrize("reason", filtering.REASONS)
def test_each_reason_triggers_on_its_pair(reason):
    image, mask = bad_pair(reason)
    found = filtering.check_pair(image, mask, disc(), photo())
    assert found is not None and found.startswith(reason), found
    if reason == filtering.OFF_OBJECT:
        assert filtering.check_pair(image, mask, None, photo()) is None, "only the foreground check sees it"
        assert "on the foreground < min_foreground 50%" in found
    if reason == filtering.DISAGREES:
        assert filtering.check_pair(image, mask, disc(), None) is None, "only the source check sees it"
        assert "IoU 0.00 < min_agreement 0.30" in found
    if reason == filtering.TOO_LARGE:
        assert found == "mask covers 69.5% of the image (> max_area 20%)"
        assert filtering.check_pair(image, mask, None, None, max_area=1.0) is None
    if reason == filtering.TOO_SMALL:
        assert found == "mask too small: 0.0244% of the image (3 px, < min_area 0.1%)"
        assert filtering.check_pair(image, mask, None, None, min_area=0.0) is None
    if reason == filtering.PIECES:
        assert found == "mask in too many pieces: 6 (> max_pieces 5)"
        assert filtering.check_pair(image, mask, None, None, max_pieces=6) is None
        assert filtering.check_pair(image, mask, None, None, max_pieces=0) is None


def test_untouched_image_disagrees_with_any_mask():
    reason = filtering.check_pair(photo(), blob((64, 48)), source=photo())
    assert reason.startswith(filtering.DISAGREES)


def test_filter_pairs_reports_each_dropped_index():
    pairs = good_pairs()[:2] + [bad_pair(r) for r in filtering.REASONS]
    images, masks = zip(*pairs)
    kept, dropped = filtering.filter_pairs(list(images), list(masks), [disc()] * 8, [photo()] * 8)
    assert kept == [0, 1]
    assert {i: next(p for p in filtering.REASONS if r.startswith(p)) for i, r in dropped.items()} == {
        2: filtering.EMPTY,
        3: filtering.TOO_SMALL,
        4: filtering.TOO_LARGE,
        5: filtering.PIECES,
        6: filtering.OFF_OBJECT,
        7: filtering.DISAGREES,
    }
    loose = {"max_area": 1.0, "min_foreground": 0.0, "min_agreement": 0.0, "min_area": 0.0, "max_pieces": 0}
    assert filtering.filter_pairs(list(images), list(masks), disc(), photo(), **loose)[1] == {2: filtering.EMPTY}


def test_filter_inputs_are_checked():
    image, mask = good_pairs()[0]
    with pytest.raises(ValueError, match=r"max_area must be in \[0, 1\]"):
        filtering.check_pair(image, mask, max_area=1.5)
    with pytest.raises(ValueError, match=r"max_area must be in \(0, 1\]"):
        filtering.check_pair(image, mask, max_area=0.0)
    with pytest.raises(ValueError, match="min_agreement"):
        filtering.check_pair(image, mask, min_agreement=-0.1)
    with pytest.raises(ValueError, match=r"mask must have the image's size \(96, 128\)"):
        filtering.check_pair(image, mask[:10])
    with pytest.raises(ValueError, match="foreground must have the image's size"):
        filtering.check_pair(image, mask, foreground=np.ones((4, 4), bool))
    with pytest.raises(ValueError, match="source must have the image's size"):
        filtering.check_pair(image, mask, source=photo()[:50])
    with pytest.raises(ValueError, match="masks: 1 masks for 2 images"):
        filtering.filter_pairs([image, image], [mask])
    with pytest.raises(ValueError, match="foregrounds must be one of none, u2netp"):
        filtering.filter_pairs([image], [mask], foregrounds="otsu")


@pytest.fixture(scope="module")
def u2netp_file() -> Path:
    try:
        return assets.u2netp_path()
    except FileNotFoundError as err:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the U²-Net-P tests: {err}", pytrace=False)
        pytest.skip(str(err))


def test_u2netp_foreground_drops_a_background_mask(u2netp_file):
    model = U2NetP(u2netp_file)
    obj = filtering.object_mask(photo(), model)
    assert obj[disc()].mean() > 0.8 and obj[~disc()].mean() < 0.05
    images, masks = zip(good_pairs()[0], bad_pair(filtering.OFF_OBJECT))
    kept, dropped = filtering.filter_pairs(images, masks, "u2netp", model=model)
    assert kept == [0] and dropped[1].startswith(filtering.OFF_OBJECT)
    kept, dropped = filtering.filter_pairs(images, masks, "u2netp", photo(), model=model)
    assert kept == [0] and dropped[1].startswith(filtering.OFF_OBJECT)


# export


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def two_component_mask() -> np.ndarray:
    mask = blob((40, 40), (6, 4))
    mask[70:80, 90:110] = True
    return mask


def test_coco_round_trips_through_pycocotools(tmp_path):
    pairs = good_pairs()[:2] + [(paint(photo(), two_component_mask()), two_component_mask())]
    images, masks = zip(*pairs)
    report = export.export_dataset(images, masks, tmp_path, "bottle", "crack")
    assert report.indices == [0, 1, 2] and report.annotations == 4 and report.empty_masks == 0
    assert report.coco == tmp_path / "annotations" / "bottle.json"
    coco = COCO(str(report.coco))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["crack"]
    for image_id, image, mask in zip(sorted(coco.getImgIds()), images, masks):
        entry = coco.loadImgs(image_id)[0]
        assert (entry["width"], entry["height"]) == (W, H)
        written = export.read_rgb(tmp_path / entry["file_name"])
        np.testing.assert_array_equal(written, np.round(image * 255).astype(np.uint8))
        union = np.zeros((H, W), np.uint8)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=[image_id])):
            part = coco.annToMask(ann)
            np.testing.assert_array_equal(part, rle_tools.decode(ann["segmentation"]))
            ys, xs = np.nonzero(part)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert ann["area"] == part.sum() and ann["iscrowd"] == 0
            assert not (union & part).any(), "components are disjoint"
            union |= part
        np.testing.assert_array_equal(union.astype(bool), mask)
    gt = tmp_path / "bottle" / "ground_truth" / "crack"
    assert sorted(p.name for p in gt.iterdir()) == ["000_mask.png", "001_mask.png", "002_mask.png"]
    np.testing.assert_array_equal(export.read_mask(gt / "002_mask.png"), masks[2])
    assert set(np.unique(cv2.imread(str(gt / "002_mask.png"), cv2.IMREAD_GRAYSCALE))) == {0, 255}
    one = export.export_dataset([images[2]], [masks[2]], tmp_path / "whole", "bottle", "crack", instances="mask")
    assert one.annotations == 1


def test_a_second_export_adds_and_never_overwrites(tmp_path):
    images, masks = zip(*good_pairs())
    export.export_dataset(images[:2], masks[:2], tmp_path, "bottle", "crack")
    first = {p: digest(p) for p in tmp_path.rglob("*.png")}
    assert len(first) == 4
    report = export.export_dataset(np.stack(images[1:]), np.stack(masks[1:]), tmp_path, "bottle", "crack")
    assert report.indices == [2, 3, 4]
    assert all(digest(p) == d for p, d in first.items()), "first export's files must be byte-identical"
    other = export.export_dataset(images[:1], masks[:1], tmp_path, "bottle", "hole", fmt="mvtec+coco")
    assert other.indices == [0]
    coco = json.loads(report.coco.read_text())
    names = [i["file_name"] for i in coco["images"]]
    assert names == [f"bottle/test/crack/{i:03d}.png" for i in range(5)] + ["bottle/test/hole/000.png"]
    assert [c["name"] for c in coco["categories"]] == ["crack", "hole"]
    assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"]) == 6
    assert len({i["id"] for i in coco["images"]}) == 6
    assert {a["category_id"] for a in coco["annotations"] if a["image_id"] == 6} == {2}
    COCO(str(report.coco))
    with pytest.raises(FileExistsError, match="start=1: pair 001 already exists.*next free index is 5"):
        export.export_dataset(images[:1], masks[:1], tmp_path, "bottle", "crack", start=1)
    gap = export.export_dataset(images[:1], masks[:1], tmp_path, "bottle", "crack", start=9)
    after = export.export_dataset(images[:1], masks[:1], tmp_path, "bottle", "crack")
    assert gap.indices == [9] and after.indices == [10]
    assert all(digest(p) == d for p, d in first.items())


def test_numbering_follows_files_and_coco_only_exports(tmp_path):
    images, masks = zip(*good_pairs())
    stray = tmp_path / "bottle" / "test" / "crack" / "007.png"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"someone else's")
    coco_only = export.export_dataset(images[:1], masks[:1], tmp_path, "bottle", "crack", fmt=["coco"])
    assert coco_only.indices == [8] and coco_only.masks == [] and stray.read_bytes() == b"someone else's"
    assert not (tmp_path / "bottle" / "ground_truth").exists()
    mvtec_only = export.export_dataset(images[:1], masks[:1], tmp_path / "m", "bottle", "crack", fmt="mvtec")
    assert mvtec_only.coco is None and not (tmp_path / "m" / "annotations").exists()
    # numbering also follows the COCO file, even when the image files were moved away
    (tmp_path / "bottle" / "test" / "crack" / "008.png").unlink()
    stray.unlink()
    assert export.export_dataset(images[:1], masks[:1], tmp_path, "bottle", "crack").indices == [9]


def test_write_new_refuses_existing_files(tmp_path):
    target = tmp_path / "a.png"
    target.write_bytes(b"old")
    with pytest.raises(FileExistsError, match="never overwrites"):
        export.write_new(target, b"new")
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_export_inputs_are_checked(tmp_path):
    images, masks = zip(*good_pairs())
    with pytest.raises(ValueError, match="fmt must name one or more of mvtec, coco"):
        export.export_dataset(images, masks, tmp_path, "bottle", "crack", fmt="yolo")
    with pytest.raises(ValueError, match="category must be a plain folder name"):
        export.export_dataset(images, masks, tmp_path, "../up", "crack")
    with pytest.raises(ValueError, match="masks: 2 masks for 4 images"):
        export.export_dataset(images, masks[:2], tmp_path, "bottle", "crack")
    bad = tmp_path / "annotations" / "bottle.json"
    bad.parent.mkdir()
    bad.write_text("[]")
    with pytest.raises(ValueError, match="not a COCO instances file"):
        export.export_dataset(images, masks, tmp_path, "bottle", "crack")
    assert bad.read_text() == "[]" and not (tmp_path / "bottle").exists()
    bad.write_text('{"images": [{"file_name": "x.png"}], "annotations": [], "categories": []}')
    with pytest.raises(ValueError, match="images must be a list of objects with an id"):
        export.export_dataset(images, masks, tmp_path, "bottle", "crack")


# command line


def run_cli(argv: list[str]) -> int:
    """``anodiff <argv>`` through the real CLI (``anodiff.cli``)."""
    from anodiff.cli import build_parser

    args = build_parser().parse_args(argv)
    return args.func(args)


def write_tree(root: Path, pairs: list[tuple[np.ndarray, np.ndarray]], category="bottle", anomaly="crack") -> None:
    """What ``anodiff generate`` writes: image, 0/255 mask and anomaly part per pair, and its settings file."""
    folder = root / category
    for i, (image, mask) in enumerate(pairs):
        part = np.where(mask[..., None], image, 0.5).astype(np.float32)
        for path, data in (
            (folder / "test" / anomaly / f"{i:03d}.png", export.encode_png(image)),
            (folder / "ground_truth" / anomaly / f"{i:03d}_mask.png", export.encode_png(mask.astype(np.uint8) * 255)),
            (folder / "anomaly_part" / anomaly / f"{i:03d}.png", export.encode_png(part)),
        ):
            export.write_new(path, data)
    (folder / f".anodiff-generate-{anomaly}.json").write_text("{}")


def test_cli_filter_then_export(tmp_path, capsys):
    tree, out = tmp_path / "generated", tmp_path / "dataset"
    write_tree(tree, good_pairs()[:2] + [bad_pair(filtering.EMPTY), bad_pair(filtering.TOO_LARGE)])
    before = {p: digest(p) for p in tree.rglob("*.png")}

    assert run_cli(["filter", "--dir", str(tree), "--dry-run"]) == 0
    assert {p: digest(p) for p in tree.rglob("*.png")} == before, "a dry run moves nothing"
    assert "would move 2" in capsys.readouterr().out

    assert run_cli(["filter", "--dir", str(tree), "--category", "bottle", "--max-area", "0.6"]) == 0
    assert "moved 2" in capsys.readouterr().out
    runs = json.loads((tree / "filter_report.json").read_text())["runs"]
    assert len(runs) == 2 and runs[0]["dry_run"] and runs[0]["dropped"][0]["moved_to"] is None
    dropped = runs[1]["dropped"]
    assert [(d["index"], d["reason"].split(" (")[0]) for d in dropped] == [
        (2, "empty mask"),
        (3, "mask covers 69.5% of the image"),
    ]
    rejected = tree / "rejected" / "bottle"
    for sub, name in (("test", "002.png"), ("ground_truth", "002_mask.png"), ("anomaly_part", "003.png")):
        moved = rejected / sub / "crack" / name
        assert digest(moved) == before[tree / "bottle" / sub / "crack" / name], "moved, not rewritten"
        assert not (tree / "bottle" / sub / "crack" / name).exists()
    assert len(list(tree.rglob("*.png"))) == len(before), "nothing deleted"

    assert run_cli(["export", "--from", str(tree), "--out", str(out), "--format", "mvtec,coco"]) == 0
    assert run_cli(["export", "--from", str(tree), "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "bottle" / "test" / "crack").iterdir()) == [f"{i:03d}.png" for i in range(4)]
    coco = COCO(str(out / "annotations" / "bottle.json"))
    assert len(coco.getImgIds()) == 4 and len(coco.getAnnIds()) == 4
    assert (
        digest(out / "bottle" / "test" / "crack" / "002.png") == before[tree / "bottle" / "test" / "crack" / "000.png"]
    )
    assert run_cli(["export", "--from", str(tree), "--out", str(tree)]) == 2
    assert run_cli(["export", "--from", str(tmp_path / "nowhere"), "--out", str(out)]) == 2


def test_cli_filter_with_a_source_photo(tmp_path):
    tree = tmp_path / "generated"
    write_tree(tree, good_pairs()[:1] + [bad_pair(filtering.DISAGREES)], anomaly="stain")
    source = tmp_path / "normal.png"
    source.write_bytes(export.encode_png(cv2.resize(photo(), (2 * W, 2 * H))))
    assert run_cli(["filter", "--dir", str(tree), "--source", str(source), "--move-to", str(tmp_path / "aside")]) == 0
    (run,) = json.loads((tree / "filter_report.json").read_text())["runs"]
    assert [d["index"] for d in run["dropped"]] == [1] and run["dropped"][0]["reason"].startswith(filtering.DISAGREES)
    assert (tmp_path / "aside" / "bottle" / "test" / "stain" / "001.png").is_file()
    assert run["kept"] == 1 and run["checked"] == 2


def test_cli_filter_u2netp_foreground(tmp_path, u2netp_file, monkeypatch):
    monkeypatch.setenv(assets.ENV_VAR, str(u2netp_file))
    tree = tmp_path / "generated"
    write_tree(tree, good_pairs()[:2] + [bad_pair(filtering.OFF_OBJECT)])
    assert run_cli(["filter", "--dir", str(tree), "--foreground", "none", "--dry-run"]) == 0
    assert run_cli(["filter", "--dir", str(tree), "--foreground", "u2netp"]) == 0
    runs = json.loads((tree / "filter_report.json").read_text())["runs"]
    assert runs[0]["dropped"] == [] and runs[1]["foreground"] == "u2netp"
    assert [(d["index"], d["reason"].split(" (")[0]) for d in runs[1]["dropped"]] == [(2, filtering.OFF_OBJECT)]


# COCO shards: constant time per pair, concurrent writers, files from before shards


EXPORTER = """
import sys
import numpy as np
from anodiff.dataset import export
rng = np.random.default_rng(int(sys.argv[2]))
for k in range(4):  # batch by batch, as a generation loop would
    image = rng.random((24, 32, 3)).astype(np.float32)
    mask = np.zeros((24, 32), bool)
    mask[4:10, 5 + k : 12 + k] = True
    export.export_dataset([image], [mask], sys.argv[1], "bottle", "crack", merge=False)
"""


def test_concurrent_exporters_share_a_folder_and_lose_nothing(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", EXPORTER, str(tmp_path), str(seed)], env=env, stderr=subprocess.PIPE, text=True
        )
        for seed in (0, 1)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0], [p.stderr.read()[-2000:] for p in procs]
    names = sorted(p.name for p in (tmp_path / "bottle" / "test" / "crack").iterdir())
    assert names == [f"{i:03d}.png" for i in range(8)]  # every pair got its own index, none overwritten
    assert len(list((tmp_path / "annotations" / "bottle.parts").glob("*.jsonl"))) == 8
    coco = COCO(str(export.merge_coco(tmp_path, "bottle")))
    files = sorted(img["file_name"] for img in coco.loadImgs(coco.getImgIds()))
    assert files == [f"bottle/test/crack/{i:03d}.png" for i in range(8)]
    assert len(coco.getAnnIds()) == 8 and len({a["id"] for a in coco.loadAnns(coco.getAnnIds())}) == 8


def test_an_export_call_never_reads_earlier_records(tmp_path):
    images, masks = zip(*good_pairs())
    export.export_dataset(images[:1], masks[:1], tmp_path, "bottle", "crack", merge=False)
    (shard,) = (tmp_path / "annotations" / "bottle.parts").glob("*.jsonl")
    shard.write_text("garbage that a reader would choke on\n")
    report = export.export_dataset(images[1:2], masks[1:2], tmp_path, "bottle", "crack", merge=False)
    assert report.indices == [1] and report.coco is None  # appended without parsing what was there
    with pytest.raises(ValueError, match=r"line 1: not an export record"):
        export.merge_coco(tmp_path, "bottle")


def test_a_coco_file_from_before_shards_is_taken_over_once(tmp_path):
    images, masks = zip(*good_pairs())
    old = export.export_dataset(images[:2], masks[:2], tmp_path, "bottle", "crack")
    legacy = json.loads(old.coco.read_text())
    import shutil

    shutil.rmtree(tmp_path / "annotations" / "bottle.parts")  # what an earlier version left: the JSON file only
    (tmp_path / "bottle" / "test" / "crack" / "001.png").unlink()  # moved away: its index stays taken
    (tmp_path / "bottle" / "ground_truth" / "crack" / "001_mask.png").unlink()
    new = export.export_dataset(images[2:3], masks[2:3], tmp_path, "bottle", "crack")
    assert new.indices == [2]
    merged = json.loads(new.coco.read_text())
    assert (
        merged["images"][:2] == legacy["images"]
        and merged["annotations"][: len(legacy["annotations"])] == legacy["annotations"]
    )
    assert merged["images"][2]["file_name"] == "bottle/test/crack/002.png"
