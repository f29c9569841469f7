from __future__ import annotations

import pytest
import torch

from anodiff.model.pairs import ANOMALY, GLOBAL, branch_ids, check_rows, interleave, split


def test_interleave_order_and_split_roundtrip():
    g = torch.arange(3).float().view(3, 1) * 10
    a = g + 1
    pairs = interleave(g, a)
    assert pairs.flatten().tolist() == [0, 1, 10, 11, 20, 21]
    g2, a2 = split(pairs)
    assert torch.equal(g2, g) and torch.equal(a2, a)


def test_branch_ids_single_chunk():
    assert branch_ids(6).tolist() == [GLOBAL, ANOMALY] * 3


def test_branch_ids_comfy_chunks_and_chunk_alone():
    # [uncond g0 a0 g1 a1 | cond g0 a0 g1 a1] and the cond chunk run alone (cfg=1 or low-memory split)
    assert branch_ids(8, chunks=2).tolist() == [0, 1, 0, 1, 0, 1, 0, 1]
    assert branch_ids(4, chunks=1).tolist() == [0, 1, 0, 1]


@pytest.mark.parametrize(
    ("rows", "chunks", "message"),
    [(3, 1, "even number of rows"), (6, 2, "3 rows per chunk"), (7, 2, "cannot be split"), (4, 0, "chunk count")],
)
def test_bad_layouts_raise_clear_errors(rows, chunks, message):
    with pytest.raises(ValueError, match=message):
        check_rows(rows, chunks)


def test_split_odd_rows_and_interleave_mismatch():
    with pytest.raises(ValueError, match="even number of rows"):
        split(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="equal shapes"):
        interleave(torch.zeros(2, 3), torch.zeros(2, 4))
