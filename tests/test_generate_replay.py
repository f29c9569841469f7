"""Per-pair sidecars that regenerate their pair (``anodiff generate --from-sidecar``), and BCM backgrounds windowed
like the photo under region control."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from test_generate_sources import FAST, Disc, disc_photo
from test_pipeline import dual_file

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
    monkeypatch.setattr(anodiff.generate.run, "U2NetP", Disc)


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
    generate(sd_dir, bcm_weights, tmp_path / "out", 1, source=tmp_path / "photo.png", region=tmp_path / "region.png",
             normal_dir=tmp_path / "normals", **FAST)  # fmt: skip
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
    squashed = resize(blackened_background(resize(normal, 64, 64), Disc().saliency(resize(normal, 64, 64))),
                      *window.work_shape)  # fmt: skip
    assert np.abs(seen[0][0] - squashed).mean() > 0.02  # what was passed before: the whole image squashed
