"""``anodiff graft``: generate's output tree, records, resume and shards; references rotating; target masks
painted / from the reference / random; a failed pair leaves no file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from graft_fixtures import rect, reference_pair, textured

from anodiff.common.imageio import read_image, read_mask, write_png
from anodiff.generate.run import pair_paths
from anodiff.graft.config import GraftSettings
from anodiff.graft.run import GraftJob, graft

FAST = GraftSettings(steps=3, optimise_steps=2)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("graft_in")
    for k in range(2):
        image, mask = reference_pair(48)
        image = np.clip(image + 0.03 * k, 0, 1)
        write_png(root / f"ref{k}.png", image)
        write_png(root / f"ref{k}_mask.png", (mask * 255).astype(np.uint8))
    (root / "normal").mkdir()
    (root / "masks").mkdir()
    for k in range(2):
        write_png(root / "normal" / f"n{k}.png", textured(10 + k, 96))
        write_png(root / "masks" / f"n{k}.png", (rect(96, 30 + 10 * k, 50 + 10 * k, 20, 44) * 255).astype(np.uint8))
    return root


def job_for(files, base, out, **kw) -> GraftJob:
    refs = [(str(files / f"ref{k}.png"), str(files / f"ref{k}_mask.png")) for k in range(2)]
    values = {"place": "masks", "masks": str(files / "masks"), "settings": FAST, "working": 64, "count": 3, **kw}
    return GraftJob(str(base), refs, str(files / "normal"), str(out), category="tile", anomaly="hole", **values)


def test_tree_records_resume_and_shards(files, base, tmp_path, one_torch_thread):
    job = job_for(files, base, tmp_path / "one")
    report = graft(job, progress=False)
    assert report.written == 3 and report.indices == [0, 1, 2]
    folder = job.folder
    for i in range(3):
        image_path, mask_path, part_path = pair_paths(folder, "hole", i)
        meta = json.loads((folder / "meta" / "hole" / f"{i:03d}.json").read_text())
        assert meta["reference"] == f"ref{i % 2}.png" and meta["source"] == f"n{i % 2}.png"  # references rotate
        photo, image = read_image(files / "normal" / f"n{i % 2}.png"), read_image(image_path)
        target = read_mask(files / "masks" / f"n{i % 2}.png") > 0.5
        mask = read_mask(mask_path) > 0.5
        assert image.shape == photo.shape and not (mask & ~target).any()
        from anodiff.regions.stitch import grown_region

        far = ~grown_region(target, 4)
        np.testing.assert_allclose(image[far], photo[far], atol=1 / 255)  # full-res photo kept outside
        assert part_path.is_file()
    record = json.loads((folder / ".anodiff-generate-hole.json").read_text())
    assert record["mode"] == "graft" and record["pending"] == []
    assert len(list((folder / ".anodiff-graft-embeddings").glob("*.safetensors"))) == 2  # one per reference
    again = graft(job, progress=False)
    assert again.written == 0 and again.skipped == 3
    with pytest.raises(FileExistsError, match="cfg"):
        graft(
            job_for(files, base, tmp_path / "one", settings=GraftSettings(steps=3, optimise_steps=2, cfg=5.0)),
            progress=False,
        )
    sharded = job_for(files, base, tmp_path / "two")
    a, b = graft(sharded, shard="0/2", progress=False), graft(sharded, shard="1/2", progress=False)
    assert sorted(a.indices + b.indices) == [0, 1, 2] and a.indices == [0, 2]
    for i in range(3):
        for one, two in zip(pair_paths(folder, "hole", i), pair_paths(sharded.folder, "hole", i)):
            assert one.read_bytes() == two.read_bytes()


def test_failed_pair_writes_nothing(files, base, tmp_path, one_torch_thread):
    masks = tmp_path / "masks"
    masks.mkdir()
    write_png(masks / "n0.png", (rect(96, 30, 50, 20, 44) * 255).astype(np.uint8))
    write_png(masks / "n1.png", np.zeros((96, 96), np.uint8))
    job = job_for(files, base, tmp_path / "out", masks=str(masks))
    with pytest.raises(ValueError, match="n1.png: the target mask is empty"):
        graft(job, progress=False)
    assert all(p.is_file() for p in pair_paths(job.folder, "hole", 0))
    assert not any(p.exists() for p in pair_paths(job.folder, "hole", 1))
    record = json.loads((job.folder / ".anodiff-generate-hole.json").read_text())
    assert 1 in record["pending"]


def test_reference_and_random_placement_lie_on_the_object(tmp_path, u2net):
    from anodiff.generate.sources import PhotoSource
    from anodiff.graft.targets import TargetMasks, reference_on_object

    fg = np.zeros((96, 96), bool)
    fg[10:90, 20:80] = True
    _, ref_mask = reference_pair(48)
    placed = [reference_on_object(ref_mask, fg, seed) for seed in range(4)]
    for m in placed:
        assert m.any() and not (m & ~fg).any()
        assert 0.5 < m.sum() / ((ref_mask > 0).sum() * 4) < 2.0  # scaled by 96/48 (area x4) times 0.8..1.25
    assert len({m.tobytes() for m in placed}) == 4
    import cv2

    photo = np.full((128, 128, 3), 0.1, np.float32)
    cv2.circle(photo, (64, 64), 40, (0.8, 0.7, 0.5), -1)
    write_png(tmp_path / "object.png", photo)
    source = PhotoSource(tmp_path / "object.png", saliency=u2net)
    assert source.foreground(0).sum() > 2000
    random = TargetMasks("random", source, None, seed=0)
    first = random(0, ref_mask)
    assert first.any() and not (first & ~source.foreground(0)).any()


def test_cli_reports_bad_input(files, base, tmp_path, capsys):
    from anodiff.cli import main

    code = main(
        [
            "graft",
            "--base",
            str(base),
            "--reference",
            str(files / "ref0.png"),
            "--reference-mask",
            str(files / "masks" / "n0.png"),
            "--normal",
            str(files / "normal"),
            "--out",
            str(tmp_path),
            "--count",
            "1",
            "--masks",
            str(files / "masks"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "anodiff graft: error:" in err and "reference-mask" in err and "96x96" in err
    assert not (tmp_path / "object").exists()


def test_filter_and_export_read_the_graft_tree(files, base, tmp_path, one_torch_thread):
    from anodiff.cli import main
    from anodiff.dataset.tree import find_pairs

    job = job_for(files, base, tmp_path / "g", count=2)
    graft(job, progress=False)
    assert [p.image.name for p in find_pairs(tmp_path / "g")] == ["000.png", "001.png"]
    assert main(["filter", "--dir", str(tmp_path / "g"), "--max-area", "0.9"]) == 0
    assert main(["export", "--from", str(tmp_path / "g"), "--out", str(tmp_path / "x")]) == 0
    coco = next((tmp_path / "x").rglob("*.json"))
    data = json.loads(coco.read_text())
    assert len(data["images"]) >= 1 and "annotations" in data


def test_cli_makes_and_resumes_pairs(files, base, tmp_path, capsys, one_torch_thread):
    from anodiff.cli import main

    argv = [
        "graft",
        "--base",
        str(base),
        "--reference",
        str(files / "ref0.png"),
        str(files / "ref1.png"),
        "--reference-mask",
        str(files / "ref0_mask.png"),
        str(files / "ref1_mask.png"),
        "--normal",
        str(files / "normal"),
        "--out",
        str(tmp_path),
        "--count",
        "2",
        "--masks",
        str(files / "masks"),
        "--steps",
        "2",
        "--optimise-steps",
        "1",
        "--size",
        "64",
        "--category",
        "tile",
        "--anomaly",
        "hole",
        "--shard",
        "1/2",
    ]
    assert main(argv) == 0
    assert "wrote 1 pair(s)" in capsys.readouterr().out
    assert [p.name for p in sorted((tmp_path / "tile" / "test" / "hole").iterdir())] == ["001.png"]
    assert main(argv) == 0
    assert "wrote 0 pair(s), skipped 1" in capsys.readouterr().out
