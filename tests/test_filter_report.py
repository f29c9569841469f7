"""Two ``anodiff filter`` runs on one root both land in ``filter_report.json``: the read-modify-write is locked."""

from __future__ import annotations

import json
import threading

import pytest
from test_export_pending import write_pairs

from anodiff.dataset import filter as filtering


def test_concurrent_filter_runs_keep_both_records(tmp_path, monkeypatch):
    write_pairs(tmp_path, 2, [])
    both_writing = threading.Barrier(2)
    write = filtering.write_atomic

    def slow_write(path, data, **kw):
        """Each run waits here for the other: unlocked, both have read the report before either writes it."""
        try:
            both_writing.wait(timeout=1.0)
        except threading.BrokenBarrierError:
            pass  # locked: the other run cannot get here until this one has written
        write(path, data, **kw)

    monkeypatch.setattr(filtering, "write_atomic", slow_write)
    errors = []

    def run(limit: float) -> None:
        try:
            filtering.filter_tree(tmp_path, dry_run=True, max_area=limit)
        except Exception as exc:  # noqa: BLE001 (reported by the assert below)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(limit,)) for limit in (0.4, 0.6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    runs = json.loads((tmp_path / filtering.REPORT_FILE).read_text())["runs"]
    assert sorted(r["limits"]["max_area"] for r in runs) == [0.4, 0.6]
    from anodiff.common.jobs import JobLock

    assert all(JobLock(lock).acquire() for lock in tmp_path.glob("*.lock")), "the lock is released"


def test_an_unreadable_report_names_what_was_expected(tmp_path):
    write_pairs(tmp_path, 1, [])
    (tmp_path / filtering.REPORT_FILE).write_text(json.dumps({"runs": {}}))
    with pytest.raises(ValueError, match=r"filter_report.json: unreadable .*expected a filter report"):
        filtering.filter_tree(tmp_path, dry_run=True)


def test_cli_mask_gate_settings_and_recorded_reasons(tmp_path, capsys):
    """The gate's limits come from the command line, each rejected pair's reason is recorded with the limits."""
    from test_export import bad_pair, good_pairs, run_cli, write_tree

    pairs = good_pairs()[:1] + [bad_pair(r) for r in (filtering.TOO_SMALL, filtering.TOO_LARGE, filtering.PIECES)]
    write_tree(tmp_path, pairs)
    assert run_cli(["filter", "--dir", str(tmp_path), "--dry-run"]) == 0
    assert "would move 3" in capsys.readouterr().out
    argv = ["filter", "--dir", str(tmp_path), "--dry-run", "--min-area", "0", "--max-area", "0.8", "--max-pieces", "6"]
    assert run_cli(argv) == 0
    assert "would move 0" in capsys.readouterr().out
    first, second = json.loads((tmp_path / filtering.REPORT_FILE).read_text())["runs"]
    assert first["limits"] | {"blur": 0} == {
        "min_area": 0.001,
        "max_area": 0.2,
        "max_pieces": 5,
        "min_foreground": 0.5,
        "min_agreement": 0.3,
        "change_threshold": 0.1,
        "blur": 0,
    }
    assert [(d["index"], d["reason"]) for d in first["dropped"]] == [
        (1, "mask too small: 0.0244% of the image (3 px, < min_area 0.1%)"),
        (2, "mask covers 69.5% of the image (> max_area 20%)"),
        (3, "mask in too many pieces: 6 (> max_pieces 5)"),
    ]
    assert second["limits"]["max_pieces"] == 6 and second["dropped"] == []
