"""``export`` and ``filter`` show a progress bar on a terminal (U²-Net-P per image can mean minutes of silence),
and none when their output goes to a file or pipe."""

from __future__ import annotations

import numpy as np
from test_export_pending import write_pairs

from anodiff.dataset import export
from anodiff.dataset.filter import filter_tree


def pairs(count: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    mask = np.zeros((24, 32), bool)
    mask[4:10, 5:12] = True
    return [np.full((24, 32, 3), 0.5, np.float32)] * count, [mask] * count


def test_export_shows_a_bar_on_request_and_none_off_a_terminal(tmp_path, capsys):
    images, masks = pairs(3)
    export.export_dataset(images, masks, tmp_path, "bottle", "crack", fmt="mvtec", progress=True)
    err = capsys.readouterr().err
    assert "export bottle/crack" in err and "3/3" in err
    export.export_dataset(iter(images), iter(masks), tmp_path, "bottle", "crack", fmt="mvtec")  # stderr: no tty
    assert capsys.readouterr().err == ""
    export.export_dataset(iter(images), iter(masks), tmp_path, "bottle", "crack", fmt="mvtec", progress=True, total=3)
    assert "3/3" in capsys.readouterr().err  # generators (as the CLI passes) with their count


def test_filter_shows_a_bar_on_request_and_none_off_a_terminal(tmp_path, capsys):
    write_pairs(tmp_path, 2, [])
    filter_tree(tmp_path, dry_run=True, progress=True)
    assert "filter" in capsys.readouterr().err
    filter_tree(tmp_path, dry_run=True)
    assert capsys.readouterr().err == ""
