"""Dataset-scale generation: per-pair regions in one batch, shards whose union is one process's file set
(in-process and as two torchrun processes), the shared record under concurrency, and the dtype option."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_pipeline import FAST, SIZE

from anodiff.generate.run import generate, parse_shard, shard_batches
from anodiff.sd15.pipeline import DualAnoDiffPipeline

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe(sd_dir):
    from test_pipeline import dual_file

    from anodiff.sd15.load import load_sd15

    return DualAnoDiffPipeline.from_sd15(load_sd15(sd_dir), dual_file())


def disc_photo() -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    photo = np.full((SIZE, SIZE, 3), 0.2, np.float32)
    photo[(yy - 16) ** 2 + (xx - 16) ** 2 < 12**2] = 0.8
    return photo


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_per_pair_regions_in_one_batch_equal_each_pair_alone(pipe):
    photo = disc_photo()
    regions = [np.zeros((SIZE, SIZE), np.float32) for _ in range(2)]
    regions[0][6:14, 6:14] = 1
    regions[1][18:28, 16:26] = 1
    both = pipe(2, seed=[3, 4], source=photo, region=regions, feather=1, **FAST)
    for k in range(2):
        alone = pipe(1, seed=[3 + k], source=photo, region=regions[k], feather=1, **FAST)
        np.testing.assert_allclose(both.images[k], alone.images[0], atol=1e-5)
        far = cv2.dilate(regions[k], np.ones((5, 5), np.uint8)) == 0
        assert np.abs(both.images[k][far] - photo[far]).max() == 0  # each pair keeps the photo outside its own region
    with pytest.raises(ValueError, match="one per pair"):
        pipe(3, source=photo, region=regions, **FAST)


def test_shard_batches_and_specs(monkeypatch):
    assert shard_batches(list(range(7)), 2, (0, 2)) == [[0, 1], [4, 5]]
    assert shard_batches(list(range(7)), 2, (1, 2)) == [[2, 3], [6]]
    assert shard_batches([1, 2, 5], 2, (0, 1)) == [[1], [2], [5]]  # resumed pairs keep their batch
    assert parse_shard("1/4") == (1, 4)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert parse_shard(None) == (1, 3)
    with pytest.raises(ValueError, match="k/n"):
        parse_shard("4/4")


def test_shards_union_is_the_single_process_file_set_with_random_regions_batched(
    sd_dir, plain_weights, tmp_path, monkeypatch
):
    import anodiff.regions.placement

    class Disc:  # a stand-in for U²-Net-P: the object is the bright disc
        def saliency(self, image):
            return (image.mean(axis=2) > 0.6).astype(np.float32)

    original = anodiff.regions.placement.foreground_mask
    monkeypatch.setattr(
        anodiff.regions.placement, "foreground_mask", lambda image, model=None, **kw: original(image, Disc(), **kw)
    )
    cv2.imwrite(str(tmp_path / "photo.png"), (disc_photo() * 255).astype(np.uint8))
    calls = []
    real_call = DualAnoDiffPipeline.__call__

    def counting(self, num_pairs, *args, **kwargs):
        calls.append(num_pairs)
        return real_call(self, num_pairs, *args, **kwargs)

    monkeypatch.setattr(DualAnoDiffPipeline, "__call__", counting)
    kw = {
        "batch_size": 2,
        "steps": 2,
        "scheduler": "ddim",
        "size": SIZE,
        "mask_method": "grey",
        "progress": False,
        "source": tmp_path / "photo.png",
        "region": "random",
        "region_size": (0.2, 0.3),
    }
    single = generate(sd_dir, plain_weights, tmp_path / "one", 5, shard="0/1", **kw)
    windows = [
        json.loads((tmp_path / "one" / "object" / "meta" / "defect" / f"{i:03d}.json").read_text())["defects"][0][
            "window"
        ]
        for i in range(5)
    ]
    shapes = [(w["work_height"], w["work_width"]) for w in windows]
    per_call = [
        sum(s == shape for s in group)
        for group in (shapes[:2], shapes[2:4], shapes[4:])
        for shape in dict.fromkeys(group)
    ]
    assert single.written == 5 and calls == per_call and len(calls) < 5  # pairs of one window shape share a call
    first = generate(sd_dir, plain_weights, tmp_path / "two", 5, shard="0/2", **kw)
    second = generate(sd_dir, plain_weights, tmp_path / "two", 5, shard="1/2", **kw)
    assert (first.indices, second.indices) == ([0, 1, 4], [2, 3])
    assert files(tmp_path / "one") == files(tmp_path / "two")
    record = json.loads((tmp_path / "two" / "object" / ".anodiff-generate-defect.json").read_text())
    assert record["pending"] == [] and record["dtype"] == "fp32"


@pytest.mark.slow
def test_two_torchrun_processes_write_exactly_the_single_process_files(sd_dir, plain_weights, tmp_path):
    args = [
        "generate",
        "--base",
        str(sd_dir),
        "--weights",
        str(plain_weights),
        "--count",
        "8",
        "--batch-size",
        "2",
        "--steps",
        "2",
        "--scheduler",
        "ddim",
        "--size",
        str(SIZE),
        "--mask-method",
        "grey",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    one = subprocess.run(
        [sys.executable, "-m", "anodiff.cli", *args, "--out", str(tmp_path / "one")],
        cwd=ROOT,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "anodiff.cli"]
    two = subprocess.run(
        [*run, *args, "--out", str(tmp_path / "two")],
        cwd=ROOT,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("wrote 4 pair(s)") == 2  # each process made its half
    assert files(tmp_path / "one") == files(tmp_path / "two") and len(files(tmp_path / "one")) == 24
    record = json.loads((tmp_path / "two" / "object" / ".anodiff-generate-defect.json").read_text())
    assert record["pending"] == []


def test_dtype_is_recorded_and_a_resume_in_another_dtype_is_refused(sd_dir, plain_weights, tmp_path):
    kw = {"batch_size": 2, "steps": 1, "scheduler": "ddim", "size": SIZE, "mask_method": "grey", "progress": False}
    assert generate(sd_dir, plain_weights, tmp_path, 2, dtype="bf16", **kw).written == 2
    with pytest.raises(FileExistsError, match="dtype='bf16', not 'fp32'"):
        generate(sd_dir, plain_weights, tmp_path, 3, dtype="fp32", **kw)
    with pytest.raises(ValueError, match="dtype must be one of"):
        generate(sd_dir, plain_weights, tmp_path / "x", 1, dtype="fp8", **kw)
