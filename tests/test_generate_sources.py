"""anodiff generate on real-size photos: a folder of 5 photos of different sizes cycled over the pairs, recorded
in per-pair sidecars, resumed byte-identically after an interruption; several random defects per photo with a
label mask; a 1600x1200 photo keeps its size and bytes outside the grown region."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import anodiff.generate.job
from anodiff.dataset.sidecar import read_sidecar
from anodiff.generate.run import generate
from anodiff.regions.placement import _template, foreground_mask
from anodiff.regions.stitch import grown_region

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZES = [(120, 160), (100, 200), (128, 96), (150, 150), (90, 140)]  # (H, W) of the five photos
SHIFTS = [-0.2, 0.2, -0.2, 0.0, 0.2]  # where each photo's object sits (x offset, fraction of the width)
FAST = {"batch_size": 2, "steps": 2, "scheduler": "ddim", "size": 64, "mask_method": "grey", "progress": False}


class Disc:
    """A stand-in for U²-Net-P: the object is the bright part of the photo."""

    def saliency(self, image):
        return (image.mean(axis=2) > 0.5).astype(np.float32)


@pytest.fixture
def disc_saliency(monkeypatch):
    import anodiff.regions.placement

    original = anodiff.regions.placement.foreground_mask
    monkeypatch.setattr(
        anodiff.regions.placement, "foreground_mask", lambda image, model=None, **kw: original(image, Disc(), **kw)
    )


def disc_photo(h: int, w: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    photo = rng.integers(20, 60, (h, w, 3)).astype(np.uint8)
    inside = ((yy - h / 2) / (0.42 * h)) ** 2 + ((xx - w * (0.5 + shift)) / (0.42 * w)) ** 2 < 1
    photo[inside] = rng.integers(180, 230, (int(inside.sum()), 3))
    return photo


def write_photos(folder: Path) -> list[str]:
    folder.mkdir()
    names = [f"part_{k}.png" for k in range(len(SIZES))]
    for k, ((h, w), name) in enumerate(zip(SIZES, names)):
        cv2.imwrite(str(folder / name), disc_photo(h, w, k, SHIFTS[k])[..., ::-1])
    return names


def random_region(box: list[int], h: int, w: int) -> np.ndarray:
    """The random region a sidecar's box stands for: the ellipse filling the box (anodiff.regions.placement'
    default)."""
    x, y, bw, bh = box
    zone = np.zeros((h, w), bool)
    zone[y : y + bh, x : x + bw] = _template(bh, bw, "ellipse")
    return zone


def pngs(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_a_folder_of_photos_cycles_records_and_resumes(sd_dir, plain_weights, tmp_path, disc_saliency, monkeypatch):
    names = write_photos(tmp_path / "photos")
    kw = {**FAST, "source": tmp_path / "photos", "region": "random", "region_size": (0.15, 0.25), "feather": 2}
    full = generate(sd_dir, plain_weights, tmp_path / "full", 7, **kw)
    assert full.written == 7
    folder = tmp_path / "full" / "object"
    for i in range(7):
        meta = read_sidecar(folder / "meta" / "defect" / f"{i:03d}.json")
        assert meta["source"] == names[i % 5] and meta["seed"] == i and meta["steps"] == 2 and meta["sampler"] == "ddim"
        assert meta["model"] == str(Path(plain_weights).resolve()) and len(meta["defects"]) == 1
        h, w = SIZES[i % 5]
        image = cv2.imread(str(folder / "test" / "defect" / f"{i:03d}.png"))[..., ::-1]
        assert image.shape == (h, w, 3) and meta["size"] == [w, h]  # each photo keeps its own size
        x, y, bw, bh = meta["defects"][0]["box"]
        zone = np.zeros((h, w), bool)
        zone[y : y + bh, x : x + bw] = True
        outside = ~grown_region(zone, 2)
        photo = disc_photo(h, w, i % 5, SHIFTS[i % 5])
        assert image[outside].tobytes() == photo[outside].tobytes()
        mask = cv2.imread(str(folder / "ground_truth" / "defect" / f"{i:03d}_mask.png"), cv2.IMREAD_GRAYSCALE)
        assert mask.shape == (h, w) and not mask[~zone].any()
        own = foreground_mask(photo / 255.0, Disc(), erode=2)  # PhotoSource's default erosion
        assert not random_region(meta["defects"][0]["box"], h, w)[~own].any()  # on its own photo's object, which
        # sits elsewhere in each photo

    real = anodiff.generate.job.write_region_pair

    def crash_at_pair_5(paths, *args, **kwargs):
        if paths[0].name == "005.png":
            raise RuntimeError("interrupted")
        return real(paths, *args, **kwargs)

    monkeypatch.setattr(anodiff.generate.job, "write_region_pair", crash_at_pair_5)
    with pytest.raises(RuntimeError, match="interrupted"):
        generate(sd_dir, plain_weights, tmp_path / "resumed", 7, **kw)
    monkeypatch.setattr(anodiff.generate.job, "write_region_pair", real)
    record = json.loads((tmp_path / "resumed" / "object" / ".anodiff-generate-defect.json").read_text())
    assert 5 in record["pending"]
    again = generate(sd_dir, plain_weights, tmp_path / "resumed", 7, **kw)
    assert again.written >= 1 and again.written + again.skipped == 7
    assert pngs(tmp_path / "resumed") == pngs(tmp_path / "full")  # the same bytes as one uninterrupted run

    (tmp_path / "photos" / "part_0.png").rename(tmp_path / "photos" / "part_9.png")  # the cycle changes
    with pytest.raises(
        FileExistsError, match="pair 0 was made from 'part_0.png', but --source now gives it 'part_1.png'"
    ):
        generate(sd_dir, plain_weights, tmp_path / "full", 7, **kw)


def test_several_random_defects_per_photo_get_a_label_mask(sd_dir, plain_weights, tmp_path, disc_saliency):
    write_photos(tmp_path / "photos")
    kw = {**FAST, "source": tmp_path / "photos" / "part_3.png", "region": "random", "region_size": (0.12, 0.18)}
    generate(sd_dir, plain_weights, tmp_path / "out", 2, defects=3, blend="poisson", **kw)
    folder = tmp_path / "out" / "object"
    for i in range(2):
        label = cv2.imread(str(folder / "labels" / "defect" / f"{i:03d}.png"), cv2.IMREAD_UNCHANGED)
        meta = read_sidecar(folder / "meta" / "defect" / f"{i:03d}.json")
        assert [d["id"] for d in meta["defects"]] == [1, 2, 3] and meta["defects"][0]["seed"] == i
        assert len({d["seed"] for d in meta["defects"]}) == 3
        mask = cv2.imread(str(folder / "ground_truth" / "defect" / f"{i:03d}_mask.png"), cv2.IMREAD_GRAYSCALE)
        assert np.array_equal(mask > 0, label > 0)
        image = cv2.imread(str(folder / "test" / "defect" / f"{i:03d}.png"))[..., ::-1]
        grown = np.zeros((150, 150), bool)
        for d in meta["defects"]:
            grown |= grown_region(random_region(d["box"], 150, 150), 4)  # generate's default feather
        assert image[~grown].tobytes() == disc_photo(150, 150, 3)[~grown].tobytes()  # Poisson stays inside
        assert (image[grown] != disc_photo(150, 150, 3)[grown]).any()
        for d in meta["defects"]:
            _, y, _, bh = d["box"]
            ids = label == d["id"]
            assert ids.sum() == d["mask_pixels"] and not ids[:y].any() and not ids[y + bh :].any()
    from pycocotools.coco import COCO
    from pycocotools.mask import decode

    from anodiff.cli import main

    assert main(["export", "--from", str(tmp_path / "out"), "--out", str(tmp_path / "coco"), "--format", "coco"]) == 0
    coco = COCO(str(tmp_path / "coco" / "annotations" / "object.json"))
    for image in coco.loadImgs(coco.getImgIds()):
        i = image["anodiff"]["pair"]
        assert image["anodiff"]["source"] == "part_3.png" and image["anodiff"]["seed"] == i  # traced to its photo
        label = cv2.imread(str(folder / "labels" / "defect" / f"{i:03d}.png"), cv2.IMREAD_UNCHANGED)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        assert sorted(a["defect_id"] for a in anns) == sorted(set(np.unique(label)) - {0})  # one per defect
        for ann in anns:
            assert np.array_equal(decode(coco.annToRLE(ann)).astype(bool), label == ann["defect_id"])
    with pytest.raises(ValueError, match="--defects applies to --region random"):
        generate(
            sd_dir, plain_weights, tmp_path / "x", 1, defects=2, **{**kw, "region": tmp_path / "photos" / "part_0.png"}
        )


def test_a_1600x1200_photo_keeps_its_size_and_bytes(sd_dir, plain_weights, tmp_path):
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (1200, 1600, 3), dtype=np.uint8)
    region = np.zeros((1200, 1600), np.uint8)
    region[700:820, 300:420] = 255
    cv2.imwrite(str(tmp_path / "photo.png"), photo[..., ::-1])
    cv2.imwrite(str(tmp_path / "region.png"), region)
    report = generate(
        sd_dir,
        plain_weights,
        tmp_path / "out",
        1,
        source=tmp_path / "photo.png",
        region=tmp_path / "region.png",
        feather=4,
        **FAST,
    )
    assert report.written == 1
    image = cv2.imread(str(tmp_path / "out" / "object" / "test" / "defect" / "000.png"))[..., ::-1]
    assert image.shape == photo.shape
    outside = ~grown_region(region > 0, 4)
    assert image[outside].tobytes() == photo[outside].tobytes()
    assert (image[region > 0] != photo[region > 0]).any()
    meta = read_sidecar(tmp_path / "out" / "object" / "meta" / "defect" / "000.json")
    window = meta["defects"][0]["window"]
    assert (window["width"], window["height"], window["work_width"]) == (240, 240, 64)  # context 2 per axis


def test_a_label_image_gives_one_defect_per_id_and_overlaps_are_refused(sd_dir, plain_weights, tmp_path):
    photo = disc_photo(150, 200, 0)
    cv2.imwrite(str(tmp_path / "photo.png"), photo[..., ::-1])
    label = np.zeros((150, 200), np.uint8)
    label[30:60, 40:80] = 1
    label[90:120, 120:170] = 2
    cv2.imwrite(str(tmp_path / "labels.png"), label)
    kw = {**FAST, "source": tmp_path / "photo.png", "region": tmp_path / "labels.png", "region_ids": True, "feather": 2}
    assert generate(sd_dir, plain_weights, tmp_path / "out", 1, **kw).written == 1
    folder = tmp_path / "out" / "object"
    meta = read_sidecar(folder / "meta" / "defect" / "000.json")
    assert [d["box"] for d in meta["defects"]] == [[40, 30, 40, 30], [120, 90, 50, 30]]
    written = cv2.imread(str(folder / "labels" / "defect" / "000.png"), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(written)) <= {0, 1, 2} and not written[label == 0].any()
    assert (written[label == 1] != 2).all() and (written[label == 2] != 1).all()
    label[55:95, 70:130] = 2  # region 2 now touches region 1
    cv2.imwrite(str(tmp_path / "labels.png"), label)
    with pytest.raises(ValueError, match="regions 1 and 2 overlap|within the feather"):
        generate(sd_dir, plain_weights, tmp_path / "out2", 1, **kw)


def test_pairs_without_region_control_get_a_sidecar_too(sd_dir, plain_weights, tmp_path):
    generate(sd_dir, plain_weights, tmp_path, 2, **FAST)
    for i in range(2):
        meta = read_sidecar(tmp_path / "object" / "meta" / "defect" / f"{i:03d}.json")
        assert (meta["pair"], meta["seed"], meta["source"], meta["size"], meta["cfg"]) == (i, i, None, [64, 64], 2.5)
    assert read_sidecar(tmp_path / "object" / "meta" / "defect" / "007.json") is None
    (tmp_path / "object" / "meta" / "defect" / "001.json").write_text("{not json")
    with pytest.raises(ValueError, match="001.json: not a pair sidecar"):
        read_sidecar(tmp_path / "object" / "meta" / "defect" / "001.json")


def test_two_weight_files_give_a_defect_type_per_region(sd_dir, plain_weights, tmp_path, disc_saliency):
    from pycocotools.coco import COCO
    from tiny_diffusers import TINY_CHANNELS, TINY_CONTEXT, randomize_

    from anodiff import DualAdapter, DualConfig, to_dual_file
    from anodiff.cli import main

    scratch = to_dual_file(randomize_(DualAdapter(DualConfig(rank=4), TINY_CHANNELS, TINY_CONTEXT), std=0.1, seed=11))
    scratch_file = scratch.save(tmp_path / "scratch.safetensors")
    write_photos(tmp_path / "photos")
    kw = {**FAST, "source": tmp_path / "photos" / "part_3.png", "region": "random", "region_size": (0.12, 0.18)}
    generate(sd_dir, [plain_weights, scratch_file], tmp_path / "out", 2, defects=3, **kw)
    folder = tmp_path / "out" / "object"
    stems = [Path(plain_weights).stem, "scratch"]
    for i in range(2):
        meta = read_sidecar(folder / "meta" / "defect" / f"{i:03d}.json")
        assert [d["type"] for d in meta["defects"]] == [stems[0], "scratch", stems[0]] == meta["defect_types"]
        assert meta["defects"][1]["model"] == str(scratch_file.resolve())
    with pytest.raises(ValueError, match="2 --weights but 1 defect"):
        generate(sd_dir, [plain_weights, scratch_file], tmp_path / "o2", 1, **kw)
    with pytest.raises(ValueError, match="several --weights need region control"):
        generate(sd_dir, [plain_weights, scratch_file], tmp_path / "o3", 1, **FAST)
    record = json.loads((folder / ".anodiff-generate-defect.json").read_text())
    assert record["weights"] == [str(Path(plain_weights).resolve()), str(scratch_file.resolve())]
    assert main(["export", "--from", str(tmp_path / "out"), "--out", str(tmp_path / "coco"), "--format", "coco"]) == 0
    coco = COCO(str(tmp_path / "coco" / "annotations" / "object.json"))
    names = {coco.loadCats(a["category_id"])[0]["name"] for a in coco.loadAnns(coco.getAnnIds())}
    assert names <= set(stems) and "scratch" in names  # each defect's COCO category is its model's defect type
