"""Per-pair sidecars that regenerate their pair (``anodiff generate --from-sidecar``), and BCM backgrounds windowed
like the photo under region control."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from test_generate_sources import FAST, Disc, disc_photo, disc_saliency  # noqa: F401 (fixture)
from test_pipeline import dual_file

import anodiff.data.masks
import anodiff.generate.run
from anodiff.common.imageio import resize
from anodiff.data.objects import blackened_background
from anodiff.dataset.sidecar import read_sidecar
from anodiff.generate.run import generate
from anodiff.regions.stitch import Window, crop
from anodiff.sd15.pipeline import DualAnoDiffPipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bcm_weights(tmp_path_factory):
    return dual_file(bcm=True).save(tmp_path_factory.mktemp("bcm") / "bcm.safetensors")


@pytest.fixture
def disc_u2net(monkeypatch):
    """generate's U²-Net-P (BCM's blackout, random regions) replaced by the bright-object stand-in."""
    monkeypatch.setattr(anodiff.data.masks, "U2NetP", Disc)  # job.load_saliency imports it when called


def write_scene(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """A 120x200 photo, its region, and a 60x100 normal image of another aspect under ``normals/``."""
    (folder / "normals").mkdir(parents=True)
    photo = disc_photo(120, 200, 0)
    cv2.imwrite(str(folder / "photo.png"), photo[..., ::-1])
    cv2.imwrite(str(folder / "normals" / "good.png"), disc_photo(60, 100, 5, 0.2)[..., ::-1])
    region = np.zeros((120, 200), np.uint8)
    region[40:70, 120:160] = 255
    cv2.imwrite(str(folder / "region.png"), region)
    return photo, region


def test_bcm_background_is_windowed_like_the_photo(sd_dir, bcm_weights, tmp_path, disc_u2net, monkeypatch):
    write_scene(tmp_path)
    seen = []
    real = DualAnoDiffPipeline.__call__

    def record(self, *args, **kwargs):
        seen.append(kwargs["backgrounds"])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(DualAnoDiffPipeline, "__call__", record)
    generate(
        sd_dir,
        bcm_weights,
        tmp_path / "out",
        1,
        source=tmp_path / "photo.png",
        region=tmp_path / "region.png",
        normal_dir=tmp_path / "normals",
        **FAST,
    )
    meta = read_sidecar(tmp_path / "out" / "object" / "meta" / "defect" / "000.json")
    window = Window.from_dict(meta["defects"][0]["window"])
    assert (window.width, window.height) != (window.photo_width, window.photo_height)  # a real window, not the photo
    normal = cv2.imread(str(tmp_path / "normals" / "good.png"))[..., ::-1].astype(np.float32) / 255.0
    at_photo_size = resize(normal, 120, 200)
    blackened = blackened_background(at_photo_size, Disc().saliency(at_photo_size))
    region = cv2.imread(str(tmp_path / "region.png"), cv2.IMREAD_GRAYSCALE) / 255.0
    expected = crop(blackened, region, window)[0]
    assert len(seen) == 1 and len(seen[0]) == 1
    np.testing.assert_array_equal(seen[0][0], expected)  # the photo's window of the background, at working size
    squashed = resize(
        blackened_background(resize(normal, 64, 64), Disc().saliency(resize(normal, 64, 64))), *window.work_shape
    )
    assert np.abs(seen[0][0] - squashed).mean() > 0.02  # what was passed before: the whole image squashed


def pair_files(root: Path, i: int) -> dict[str, bytes]:
    """Every file of pair ``i`` under ``root/object``: image, mask, anomaly part, label mask (if any), sidecar."""
    folder = root / "object"
    names = [
        f"test/defect/{i:03d}.png",
        f"ground_truth/defect/{i:03d}_mask.png",
        f"anomaly_part/defect/{i:03d}.png",
        f"labels/defect/{i:03d}.png",
        f"meta/defect/{i:03d}.json",
    ]
    return {n: (folder / n).read_bytes() for n in names if (folder / n).is_file()}


@pytest.fixture
def replay_u2net(monkeypatch):
    import anodiff.generate.replay

    monkeypatch.setattr(anodiff.generate.replay, "U2NetP", Disc)


@pytest.mark.usefixtures("disc_u2net", "replay_u2net", "disc_saliency")
def test_from_sidecar_regenerates_region_pairs_with_bcm_byte_identically(sd_dir, bcm_weights, tmp_path):
    from anodiff.cli import main

    write_scene(tmp_path)
    kw = {
        **FAST,
        "source": tmp_path / "photo.png",
        "region": "random",
        "region_size": (0.15, 0.25),
        "feather": 3,
        "normal_dir": tmp_path / "normals",
        "blend": "poisson",
    }
    generate(sd_dir, bcm_weights, tmp_path / "out", 3, defects=2, **kw)
    meta = read_sidecar(tmp_path / "out" / "object" / "meta" / "defect" / "001.json")
    assert (meta["feather"], meta["blend"], meta["mask_method"], meta["sampler"], meta["steps"]) == (
        3,
        "poisson",
        "grey",
        "ddim",
        2,
    )
    assert meta["seed"] == 1 and meta["group"] == [0, 1] and meta["hashes"]["weights"][0] == sha256(bcm_weights)
    assert meta["background"]["file"] == str((tmp_path / "normals" / "good.png").resolve())
    assert meta["background"]["resized_to"] == [200, 120] and len(meta["hashes"]["base"]) == 64
    from anodiff.generate.provenance import region_of

    for d in meta["defects"]:
        zone = region_of(d["region"], "test")
        x, y, w, h = d["box"]
        assert zone.shape == (120, 200) and zone[y : y + h, x : x + w].sum() == zone.sum() > 0  # the shape itself
        assert d["background_window"] == d["window"]
    for i in (1, 2):  # pair 1 was sampled with pair 0, pair 2 alone
        sidecar = tmp_path / "out" / "object" / "meta" / "defect" / f"{i:03d}.json"
        assert main(["generate", "--from-sidecar", str(sidecar), "--out", str(tmp_path / f"again{i}")]) == 0
        again, original = pair_files(tmp_path / f"again{i}", i), pair_files(tmp_path / "out", i)
        assert len(original) == 5 and again == original  # image, mask, part, label and sidecar, byte for byte


def test_from_sidecar_regenerates_a_plain_pair_and_refuses_changed_files(sd_dir, plain_weights, tmp_path, capsys):
    from anodiff.cli import main

    generate(sd_dir, plain_weights, tmp_path / "out", 2, **FAST)
    sidecar = tmp_path / "out" / "object" / "meta" / "defect" / "001.json"
    assert main(["generate", "--from-sidecar", str(sidecar), "--out", str(tmp_path / "again")]) == 0
    assert pair_files(tmp_path / "again", 1) == pair_files(tmp_path / "out", 1)
    assert set(pair_files(tmp_path / "again", 1)) == {
        "test/defect/001.png",
        "ground_truth/defect/001_mask.png",
        "anomaly_part/defect/001.png",
        "meta/defect/001.json",
    }

    moved = tmp_path / "moved.safetensors"
    moved.write_bytes(Path(plain_weights).read_bytes()[:-1] + b" ")
    args = ["generate", "--from-sidecar", str(sidecar), "--out", str(tmp_path / "x")]
    assert main([*args, "--weights", str(moved)]) == 2
    assert f"weights {moved} changed since the pair was made" in capsys.readouterr().err
    old = tmp_path / "old.json"
    old.write_text('{"version": 1, "pair": 0, "seed": 0}')
    assert main(["generate", "--from-sidecar", str(old), "--out", str(tmp_path / "x")]) == 2
    assert "written before sidecars recorded what regenerates a pair (no size, source" in capsys.readouterr().err
    assert main(["generate", "--out", str(tmp_path / "x")]) == 2
    assert "--base, --weights, --count required" in capsys.readouterr().err


def sha256(path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_a_batch_mate_missing_or_from_another_run_is_left_out_with_a_warning(tmp_path, caplog):
    from anodiff.dataset.sidecar import write_sidecar
    from anodiff.generate.provenance import RUN_KEYS
    from anodiff.generate.replay import batch_mates

    run = {**dict.fromkeys(RUN_KEYS, 1), "group": [0, 1, 2, 3]}
    for i, changed in ((0, {}), (1, {"steps": 9}), (3, {})):
        write_sidecar(tmp_path / f"{i:03d}.json", {**run, "pair": i, **changed})
    (tmp_path / "002.json").write_text("{broken")
    mates = batch_mates(tmp_path / "000.json", {**run, "pair": 0})
    assert [m["pair"] for m in mates] == [0, 3]
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "pair 1 was sampled with this one" in said and "pair 2 was sampled" in said and "by rounding" in said
