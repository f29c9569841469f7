from __future__ import annotations

import argparse

import cv2
import numpy as np
import pytest
import torch
from tiny_diffusers import TINY_CHANNELS, TINY_CONTEXT, randomize_, tiny_text_encoder

from anodiff import DualAdapter, DualConfig, DualWeightsError, to_dual_file
from anodiff.cli.generate import register
from anodiff.generate.run import generate
from anodiff.sd15.load import load_sd15
from anodiff.sd15.pipeline import SCHEDULERS, DualAnoDiffPipeline
from anodiff.weights.text import add_text_lora, text_lora_state

SIZE = 32
FAST = {"height": SIZE, "width": SIZE, "steps": 2, "scheduler": "ddim", "progress": False}


def dual_file(bcm: bool = False, channels: tuple[int, ...] = TINY_CHANNELS):
    """A random tiny dual model with a text LoRA; BCM's ``a`` set to 0.5 so backgrounds visibly matter."""
    config = DualConfig(rank=4, bcm=bcm, text_rank=2)
    adapter = randomize_(DualAdapter(config, channels, TINY_CONTEXT), std=0.1)
    with torch.no_grad():
        for layer in adapter.layers.values():
            if layer.bcm is not None:
                layer.bcm.a.fill_(0.5)
    te = add_text_lora(tiny_text_encoder(), config.text_rank, config.text_lora_alpha)
    randomize_(te, seed=3)
    return to_dual_file(adapter, text_lora_state(te))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe(sd_dir):
    return DualAnoDiffPipeline.from_sd15(load_sd15(sd_dir), dual_file())


@pytest.fixture(scope="module")
def bcm_pipe(sd_dir):
    return DualAnoDiffPipeline.from_sd15(load_sd15(sd_dir), dual_file(bcm=True))


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    return dual_file().save(folder / "dual.safetensors"), dual_file(bcm=True).save(folder / "bcm.safetensors")


class Recorder(torch.nn.Module):
    """Wraps the DualUNet to record what each step sends it."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, sample, timestep, context, unet_pass=None, **kw):
        self.calls.append((sample.shape[0], unet_pass.chunks, {k: v.shape for k, v in kw.items()}))
        return self.model(sample, timestep, context, unet_pass=unet_pass, **kw)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_every_scheduler_returns_finite_pairs_of_the_requested_size(pipe, scheduler):
    out = pipe(2, **{**FAST, "scheduler": scheduler})
    assert len(out) == 2 and out.seeds == [0, 1]
    for images in (out.images, out.anomaly_parts):
        assert images.shape == (2, SIZE, SIZE, 3) and images.dtype == np.float32
        assert np.isfinite(images).all() and images.min() >= 0.0 and images.max() <= 1.0
    assert not np.array_equal(out.images, out.anomaly_parts)


def test_built_and_run_inside_inference_mode(sd_dir, pipe):
    """Every tensor is then an inference tensor, the SAIM weights included (their fold cache must cope)."""
    with torch.inference_mode():
        inside = DualAnoDiffPipeline.from_sd15(load_sd15(sd_dir), dual_file())
        assert next(inside.adapter.parameters()).is_inference()
        out = inside(1, seed=5, **FAST)
    want = pipe(1, seed=5, **FAST)
    np.testing.assert_allclose(out.images, want.images, atol=1e-5)
    np.testing.assert_allclose(out.anomaly_parts, want.anomaly_parts, atol=1e-5)


def test_seeds_reproduce_pairs_and_per_pair_seeds_ignore_the_batch(pipe):
    a, b, c = pipe(2, seed=3, **FAST), pipe(2, seed=3, **FAST), pipe(2, seed=4, **FAST)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.anomaly_parts, b.anomaly_parts)
    assert not np.allclose(a.images, c.images)
    np.testing.assert_array_equal(a.images[1], c.images[0])  # seed 4 is pair 1 of seed=3

    batch, alone = pipe(4, seed=10, **FAST), pipe(1, seed=[12], **FAST)
    np.testing.assert_allclose(batch.images[2], alone.images[0], atol=1e-5)
    np.testing.assert_allclose(batch.anomaly_parts[2], alone.anomaly_parts[0], atol=1e-5)


def test_cfg_one_runs_the_cond_chunk_only(pipe, monkeypatch):
    rec = Recorder(pipe.model)
    monkeypatch.setattr(pipe, "model", rec)
    plain = pipe(2, cfg=1.0, **FAST)
    assert {c[:2] for c in rec.calls} == {(4, 1)}
    rec.calls.clear()
    guided = pipe(2, cfg=2.5, **FAST)
    assert {c[:2] for c in rec.calls} == {(8, 2)} and len(rec.calls) == 2
    assert np.isfinite(plain.images).all() and not np.allclose(plain.images, guided.images)


def test_bcm_backgrounds_change_the_result(bcm_pipe, monkeypatch):
    rng = np.random.default_rng(0)
    backgrounds = [rng.random((SIZE, SIZE, 3), dtype=np.float32) for _ in range(2)]
    without = bcm_pipe(2, seed=1, **FAST)
    rec = Recorder(bcm_pipe.model)
    monkeypatch.setattr(bcm_pipe, "model", rec)
    with_bg = bcm_pipe(2, seed=1, backgrounds=backgrounds, **FAST)
    assert np.isfinite(with_bg.images).all()
    assert np.abs(with_bg.images - without.images).max() > 1e-3
    # one background row per pair of the CFG batch: grey (uncond) for the first two, the images for the rest
    assert rec.calls[0][2] == {"background": (4, 4, 16, 16), "background_timestep": (4,)}
    again = bcm_pipe(2, seed=1, backgrounds=backgrounds, **FAST)
    np.testing.assert_array_equal(again.images, with_bg.images)
    shared = bcm_pipe(1, seed=2, backgrounds=[cv2.resize(backgrounds[1], (48, 48))], **FAST)
    assert shared.images.shape == (1, SIZE, SIZE, 3)


def test_errors_name_the_input(pipe, sd_dir):
    with pytest.raises(ValueError, match="trained without BCM"):
        pipe(1, backgrounds=[np.zeros((SIZE, SIZE, 3), np.float32)], **FAST)
    with pytest.raises(ValueError, match="height must be a positive multiple of 2"):
        pipe(1, **{**FAST, "height": 33})
    with pytest.raises(ValueError, match="cfg must be >= 1"):
        pipe(1, cfg=0.5, **FAST)
    with pytest.raises(ValueError, match="scheduler must be one of"):
        pipe(1, **{**FAST, "scheduler": "lms"})
    with pytest.raises(ValueError, match=r"one seed per pair \(2\), got 1"):
        pipe(2, seed=[1], **FAST)
    with pytest.raises(ValueError, match="already serves a DualAnoDiff pipeline"):
        DualAnoDiffPipeline.from_sd15(pipe.base, dual_file())
    with pytest.raises(DualWeightsError, match=r"trained for a UNet with channels \(64, 64, 64, 64\)"):
        DualAnoDiffPipeline.from_sd15(load_sd15(sd_dir), dual_file(channels=(64, 64, 64, 64)))


def tree(out, i, category="obj", anomaly="crack"):
    root = out / category
    name = f"{i:03d}"
    return (
        root / "test" / anomaly / f"{name}.png",
        root / "ground_truth" / anomaly / f"{name}_mask.png",
        root / "anomaly_part" / anomaly / f"{name}.png",
    )


def stamps(out, count):
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for i in range(count) for p in tree(out, i)}


def test_generate_writes_an_mvtec_tree_and_resumes(sd_dir, weights, tmp_path):
    kw = {
        "category": "obj",
        "anomaly": "crack",
        "batch_size": 2,
        "steps": 1,
        "scheduler": "ddim",
        "size": SIZE,
        "mask_method": "grey",
    }
    report = generate(sd_dir, weights[0], tmp_path, 3, **kw)
    assert (report.written, report.skipped, report.indices) == (3, 0, [0, 1, 2])
    for i in range(3):
        image, mask, part = tree(tmp_path, i)
        assert cv2.imread(str(image)).shape == (SIZE, SIZE, 3) and cv2.imread(str(part)).shape == (SIZE, SIZE, 3)
        m = cv2.imread(str(mask), cv2.IMREAD_UNCHANGED)
        assert m.shape == (SIZE, SIZE) and set(np.unique(m)) <= {0, 255}
    assert report.empty_masks == sum(not cv2.imread(str(tree(tmp_path, i)[1])).any() for i in range(3))
    assert not list(tmp_path.rglob("*.tmp"))
    before = stamps(tmp_path, 3)

    again = generate(sd_dir, weights[0], tmp_path, 3, **kw)
    assert (again.written, again.skipped) == (0, 3) and stamps(tmp_path, 3) == before

    tree(tmp_path, 1)[1].unlink()  # an interrupted pair: redone, everything else untouched
    redo = generate(sd_dir, weights[0], tmp_path, 4, **kw)
    assert (redo.written, redo.skipped, redo.redone, redo.indices) == (2, 2, 1, [1, 3])
    after = stamps(tmp_path, 3)
    assert {p for p in before if after[p][0] != before[p][0]} <= set(tree(tmp_path, 1))  # only pair 1 rewritten
    assert all(after[p][1] == data for p, (_, data) in before.items())  # the same seed gives the same pair

    with pytest.raises(FileExistsError, match="made with seed=0, not 7"):
        generate(sd_dir, weights[0], tmp_path, 3, seed=7, **kw)
    forced = generate(sd_dir, weights[0], tmp_path, 2, seed=7, force=True, **kw)
    assert forced.written == 2 and tree(tmp_path, 0)[0].read_bytes() != before[tree(tmp_path, 0)[0]][1]
    rest = generate(sd_dir, weights[0], tmp_path, 4, seed=7, **kw)
    assert (rest.skipped, rest.indices) == (2, [2, 3])  # force marked the old seed-0 pairs 2 and 3 pending


def test_generate_refuses_foreign_files_and_bad_inputs(sd_dir, weights, tmp_path):
    kw = {"category": "obj", "anomaly": "crack", "steps": 2, "size": SIZE, "mask_method": "grey", "progress": False}
    image = tree(tmp_path, 0)[0]
    image.parent.mkdir(parents=True)
    image.write_bytes(b"a real MVTec image")
    with pytest.raises(FileExistsError, match="did not write"):
        generate(sd_dir, weights[0], tmp_path, 1, **kw)
    assert image.read_bytes() == b"a real MVTec image"
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        generate(sd_dir, tmp_path / "nope.safetensors", tmp_path / "o", 1, **kw)
    with pytest.raises(FileNotFoundError, match="base model not found"):
        generate(tmp_path / "no_base", weights[0], tmp_path / "o", 1, **kw)
    with pytest.raises(ValueError, match="trained without BCM"):
        generate(sd_dir, weights[0], tmp_path / "o", 1, normal_dir=tmp_path, **kw)
    with pytest.raises(ValueError, match="anomaly must be a plain folder name"):
        generate(sd_dir, weights[0], tmp_path / "o", 1, **{**kw, "anomaly": "../x"})


def test_generate_with_bcm_backgrounds(sd_dir, weights, tmp_path):
    normal = tmp_path / "good"
    normal.mkdir()
    rng = np.random.default_rng(1)
    for k in range(2):
        cv2.imwrite(str(normal / f"{k:03d}.png"), rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    report = generate(
        sd_dir,
        weights[1],
        tmp_path / "out",
        2,
        category="obj",
        anomaly="crack",
        steps=1,
        scheduler="ddim",
        size=SIZE,
        mask_method="grey",
        normal_dir=normal,
        background_every=1,
        progress=False,
    )
    assert report.written == 2 and all(p.is_file() for i in range(2) for p in tree(tmp_path / "out", i))


def test_cli_subcommand(sd_dir, weights, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="anodiff")
    register(parser.add_subparsers(dest="command", required=True))
    common = ["--out", str(tmp_path), "--count", "1", "--size", str(SIZE), "--mask-method", "grey"]
    line = ["generate", "--base", str(sd_dir), "--weights", str(weights[0]), *common]
    args = parser.parse_args(line)
    assert (args.scheduler, args.cfg, args.steps, args.batch_size, args.force) == ("pndm", None, None, 4, False)
    args = parser.parse_args([*line, "--steps", "1", "--scheduler", "ddim"])
    assert args.func(args) == 0
    assert "wrote 1 pair(s)" in capsys.readouterr().out
    assert tree(tmp_path, 0, "object", "defect")[1].is_file()
    args = parser.parse_args(["generate", "--base", str(tmp_path / "missing"), "--weights", str(weights[0]), *common])
    assert args.func(args) == 2
    assert "base model not found" in capsys.readouterr().err


@pytest.mark.parametrize("scheduler", ["ddim", "euler"])
def test_region_control_keeps_the_photo_outside_the_grown_region(pipe, scheduler):
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    photo = np.stack([0.2 + 0.6 * xx, 0.4 + 0.3 * yy, 0.5 * np.ones_like(xx)], -1).astype(np.float32)
    region = np.zeros((32, 32), np.float32)
    region[8:20, 10:24] = 1
    free = pipe(2, 32, 32, steps=3, scheduler=scheduler, seed=5, progress=False)
    held = pipe(2, 32, 32, steps=3, scheduler=scheduler, seed=5, progress=False, source=photo, region=region, feather=2)
    far = np.ones((32, 32), bool)
    far[6:22, 8:26] = False  # the region grown by the 2-pixel feather
    assert np.abs(held.images[:, far] - photo[far]).max() == 0
    assert np.abs(held.images[:, 9:19, 11:23] - photo[9:19, 11:23]).max() > 1e-3  # something was drawn inside
    assert not np.allclose(held.anomaly_parts, free.anomaly_parts)
    with pytest.raises(ValueError, match="region is empty"):
        pipe(1, 32, 32, steps=2, progress=False, source=photo, region=np.zeros((32, 32)))
    with pytest.raises(ValueError, match="needs both"):
        pipe(1, 32, 32, steps=2, progress=False, source=photo)


def test_generate_with_a_region_writes_clipped_masks(sd_dir, weights, tmp_path):
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    photo = (np.stack([0.2 + 0.6 * xx, 0.4 + 0.3 * yy, 0.5 * np.ones_like(xx)], -1) * 255).astype(np.uint8)
    region = np.zeros((32, 32), np.uint8)
    region[8:20, 10:24] = 255
    cv2.imwrite(str(tmp_path / "photo.png"), photo[..., ::-1])
    cv2.imwrite(str(tmp_path / "region.png"), region)
    plain, _ = weights
    report = generate(
        sd_dir,
        plain,
        tmp_path / "out",
        2,
        batch_size=2,
        steps=3,
        scheduler="ddim",
        size=32,
        mask_method="grey",
        progress=False,
        source=tmp_path / "photo.png",
        region=tmp_path / "region.png",
        feather=2,
    )
    assert report.written == 2
    for i in range(2):
        image_path, mask_path, _ = tree(tmp_path / "out", i, "object", "defect")
        mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
        assert not (mask[region == 0]).any()  # the mask never leaves the region
        image = cv2.imread(str(image_path))[..., ::-1]
        far = np.ones((32, 32), bool)
        far[6:22, 8:26] = False
        assert np.abs(image[far].astype(int) - photo[far].astype(int)).max() <= 1  # the photo, up to 8-bit rounding
    with pytest.raises(ValueError, match="needs both"):
        generate(sd_dir, plain, tmp_path / "o2", 1, size=32, source=tmp_path / "photo.png", progress=False)


def test_generate_with_random_regions_on_the_object(sd_dir, weights, tmp_path):
    from anodiff.regions.placement import foreground_mask, sample_regions

    class Disc:  # a stand-in for U²-Net-P: the object is the bright disc
        def saliency(self, image):
            return (image.mean(axis=2) > 0.6).astype(np.float32)

    yy, xx = np.mgrid[0:32, 0:32]
    photo = np.full((32, 32, 3), 0.2, np.float32)
    photo[(yy - 16) ** 2 + (xx - 16) ** 2 < 12**2] = 0.8
    cv2.imwrite(str(tmp_path / "photo.png"), (photo * 255).astype(np.uint8))
    import anodiff.regions.placement

    original = anodiff.regions.placement.foreground_mask
    anodiff.regions.placement.foreground_mask = lambda image, model=None, **kw: original(image, model=Disc(), **kw)
    try:
        report = generate(
            sd_dir,
            weights[0],
            tmp_path / "out",
            2,
            batch_size=2,
            steps=2,
            scheduler="ddim",
            size=32,
            mask_method="grey",
            progress=False,
            source=tmp_path / "photo.png",
            region="random",
            region_size=(0.2, 0.3),
        )
    finally:
        anodiff.regions.placement.foreground_mask = original
    assert report.written == 2
    fg = foreground_mask(photo, model=Disc(), erode=2)
    for i in range(2):
        zone = sample_regions(fg, 1, size=(0.2, 0.3), seed=(0, i))[0]
        assert (zone <= fg).all()
        mask = cv2.imread(str(tree(tmp_path / "out", i, "object", "defect")[1]), cv2.IMREAD_GRAYSCALE)
        assert not mask[~zone].any()
