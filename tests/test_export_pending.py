"""Pairs that generate's record still lists as pending are left out of export and filter: after an interrupted
``generate --force`` with new settings they hold files of the old settings."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from test_generate_sources import FAST

from anodiff.cli import main
from anodiff.common.imageio import encode_png
from anodiff.dataset.filter import filter_tree
from anodiff.dataset.tree import find_pairs


def write_pairs(root: Path, count: int, pending: list[int], anomaly: str = "crack") -> Path:
    """``count`` pairs of ``bottle/<anomaly>`` and a generate record listing ``pending``."""
    folder = root / "bottle"
    mask = np.zeros((24, 32), bool)
    mask[5:12, 6:14] = True
    for i in range(count):
        for path, data in (
            (folder / "test" / anomaly / f"{i:03d}.png", encode_png(np.full((24, 32, 3), 0.3 + 0.1 * i, np.float32))),
            (folder / "ground_truth" / anomaly / f"{i:03d}_mask.png", encode_png(mask.astype(np.uint8) * 255)),
        ):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    (folder / f".anodiff-generate-{anomaly}.json").write_text(json.dumps({"version": 1, "pending": pending}))
    return folder


def test_find_pairs_skips_pending_pairs_with_one_warning(tmp_path, caplog):
    folder = write_pairs(tmp_path, 4, [1, 3, 7])
    write_pairs(tmp_path, 2, [], anomaly="scratch")
    with caplog.at_level(logging.WARNING):
        pairs = find_pairs(tmp_path)
    assert [(p.anomaly, p.index) for p in pairs] == [("crack", 0), ("crack", 2), ("scratch", 0), ("scratch", 1)]
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(folder / "test" / "crack") in warning and "2 pair(s) skipped" in warning
    assert "rerun the same anodiff generate command" in warning


def test_export_and_filter_leave_pending_pairs_out(tmp_path):
    write_pairs(tmp_path / "tree", 3, [0])
    assert main(["export", "--from", str(tmp_path / "tree"), "--out", str(tmp_path / "out"), "--format", "mvtec"]) == 0
    exported = sorted(p.name for p in (tmp_path / "out" / "bottle" / "test" / "crack").iterdir())
    assert exported == ["000.png", "001.png"]  # pairs 1 and 2, numbered afresh
    report = filter_tree(tmp_path / "tree", dry_run=True)
    assert report.checked == 2


def test_a_force_run_stopped_while_loading_leaves_the_old_pairs_pending(sd_dir, plain_weights, tmp_path, monkeypatch):
    import anodiff.sd15.load
    from anodiff.generate.run import generate

    generate(sd_dir, plain_weights, tmp_path, 2, **FAST)
    assert [p.index for p in find_pairs(tmp_path)] == [0, 1]

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(anodiff.sd15.load, "load_sd15", stopped)
    with pytest.raises(KeyboardInterrupt):
        generate(sd_dir, plain_weights, tmp_path, 2, **{**FAST, "seed": 5}, force=True)
    record = json.loads((tmp_path / "object" / ".anodiff-generate-defect.json").read_text())
    assert record["seed"] == 5 and record["pending"] == [0, 1]  # the seed-0 files are not seed-5 pairs
    with pytest.raises(FileNotFoundError, match="no pairs"):
        find_pairs(tmp_path)


def test_eval_leaves_pending_pairs_out_too(tmp_path, caplog):
    from anodiff.metrics.tree import generated_pairs

    folder = write_pairs(tmp_path, 4, [0, 2])
    with caplog.at_level(logging.WARNING):
        pairs = generated_pairs(folder)
    assert [p.image.name for p in pairs["crack"]] == ["001.png", "003.png"]
    assert "2 pair(s) skipped" in caplog.text and ".anodiff-generate-crack.json" in caplog.text
