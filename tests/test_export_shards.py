"""COCO shard merging survives an exporter killed mid-line (or one still writing): the incomplete last line is
left out with a warning, while a corrupt line before it still fails loudly."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from anodiff.dataset import export, numbering


def two_shards(root) -> list:
    """Two export calls of one pair each: two shards, one line each."""
    for k in range(2):
        mask = np.zeros((24, 32), bool)
        mask[4:10, 5 + k : 12 + k] = True
        export.export_dataset([np.full((24, 32, 3), 0.5, np.float32)], [mask], root, "bottle", "crack", merge=False)
    return sorted((root / "annotations" / "bottle.parts").glob("*.jsonl"))


def test_an_incomplete_last_line_is_left_out_with_a_warning(tmp_path, caplog):
    first, second = two_shards(tmp_path)
    record = first.read_text()
    first.write_text(record + record[: len(record) // 2])  # killed while writing its second line
    with caplog.at_level(logging.WARNING):
        coco = json.loads(export.merge_coco(tmp_path, "bottle").read_text())
    assert [img["file_name"] for img in coco["images"]] == ["bottle/test/crack/000.png", "bottle/test/crack/001.png"]
    assert len(coco["annotations"]) == 2
    assert f"{first}: its last line (2) has no newline" in caplog.text
    second.write_text(second.read_text().rstrip("\n"))  # complete JSON, newline not yet written: still left out
    coco = json.loads(export.merge_coco(tmp_path, "bottle").read_text())
    assert [img["file_name"] for img in coco["images"]] == ["bottle/test/crack/000.png"]


def test_a_corrupt_line_in_the_middle_still_fails(tmp_path):
    first, _ = two_shards(tmp_path)
    record = first.read_text()
    first.write_text(record[: len(record) // 2] + "\n" + record)
    with pytest.raises(ValueError, match=r"line 1: not an export record.*move the file away"):
        export.merge_coco(tmp_path, "bottle")
    first.write_bytes(b"\xff\xfe\n" + record.encode())
    with pytest.raises(ValueError, match="not UTF-8 text"):
        export.merge_coco(tmp_path, "bottle")


def test_after_the_first_export_a_call_lists_no_folder(tmp_path, monkeypatch):
    """The next index comes from its record, so a call costs the same however many pairs the folders hold; a
    stray file at the recorded index (copied in by hand) is skipped, never overwritten."""
    two_shards(tmp_path)  # 000, 001; the second call already starts from the record
    stray = tmp_path / "bottle" / "ground_truth" / "crack" / "002_mask.png"
    stray.write_bytes(b"someone else's mask")

    def no_listing(path):
        raise AssertionError(f"an export call listed {path}")

    monkeypatch.setattr(numbering.os, "listdir", no_listing)  # where an export lists the folders
    mask = np.zeros((24, 32), bool)
    mask[2:6, 2:6] = True
    report = export.export_dataset([np.zeros((24, 32, 3), np.float32)], [mask], tmp_path, "bottle", "crack")
    assert report.indices == [3] and stray.read_bytes() == b"someone else's mask"
    assert (tmp_path / "bottle" / ".anodiff-export-crack.next").read_text() == "4"


def test_export_finalise_writes_the_coco_file_from_the_command_line(tmp_path, capsys):
    from test_export import run_cli

    two_shards(tmp_path)  # what two Export Dataset prompts leave: records, no COCO file
    assert not (tmp_path / "annotations" / "bottle.json").exists()
    assert run_cli(["export", "--out", str(tmp_path), "--finalise"]) == 0
    path = tmp_path / "annotations" / "bottle.json"
    assert f"COCO file {path}: 2 images, 2 annotations, 1 categories" in capsys.readouterr().out
    assert len(json.loads(path.read_text())["images"]) == 2
    assert run_cli(["export", "--out", str(tmp_path / "empty"), "--finalise"]) == 2
    assert "no exported COCO records" in capsys.readouterr().err
    assert run_cli(["export", "--out", str(tmp_path)]) == 2
    assert "--from is required" in capsys.readouterr().err
