"""COCO shard merging survives an exporter killed mid-line (or one still writing): the incomplete last line is
left out with a warning, while a corrupt line before it still fails loudly."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from anodiff.dataset import export


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
