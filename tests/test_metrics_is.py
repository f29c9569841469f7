"""Inception Score: a hand-computable case, and equality with torch-fidelity's own command on one random network."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def random_inception_file(tmp_path_factory):
    from metric_nets import save_random_inception

    return save_random_inception(tmp_path_factory.mktemp("inception") / "pt_inception-random.pth")


def test_inception_score_known_answers():
    from anodiff.metrics.inception_score import inception_score

    confident = torch.zeros(8, 1008)
    confident[torch.arange(8), torch.arange(8) % 4] = 100.0  # 4 classes, each predicted with certainty, evenly
    assert inception_score(confident, splits=1).mean == pytest.approx(4.0, rel=1e-6)
    assert inception_score(torch.zeros(8, 1008), splits=1).mean == pytest.approx(1.0)  # one flat prediction
    same = confident[:1].repeat(8, 1)
    assert inception_score(same, splits=1).mean == pytest.approx(1.0)  # certain but always the same class
    # two splits of 4 rows; each split holds 2 or more distinct classes, so the score is between 2 and 4
    two = inception_score(confident, splits=2)
    assert 2.0 <= two.mean <= 4.0 and two.splits == 2 and two.images == 8
    with pytest.raises(ValueError, match="at least 10 images"):
        inception_score(confident)


def test_inception_score_equals_torch_fidelity(tmp_path, random_inception_file):
    import torch_fidelity

    from anodiff.metrics.inception_score import inception_score, load_is_inception, logits

    rng = np.random.default_rng(0)
    folder = tmp_path / "crack"
    folder.mkdir()
    for i in range(23):  # not a multiple of 10: uneven splits, as with real counts
        image = (rng.random((40, 56, 3)) * 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"{i:03d}.png"), image)
    model = load_is_inception(random_inception_file)
    ours = inception_score(logits(sorted(folder.iterdir()), model, batch_size=5))
    reference = torch_fidelity.calculate_metrics(
        input1=str(folder),
        isc=True,
        cuda=False,
        cache=False,
        verbose=False,
        feature_extractor_weights_path=str(random_inception_file),
    )
    assert ours.mean > 1.1  # a score that tells images apart, so equality is not 1 == 1
    assert ours.mean == pytest.approx(reference["inception_score_mean"], rel=1e-5)
    assert ours.std == pytest.approx(reference["inception_score_std"], rel=1e-4, abs=1e-6)


def test_inception_logits_file_errors(tmp_path, monkeypatch):
    from anodiff.metrics import assets
    from anodiff.metrics.inception_score import load_is_inception

    monkeypatch.setattr(assets, "REPO_CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(assets, "PACK_MODELS_DIR", tmp_path / "models")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv("ANODIFF_INCEPTION_LOGITS", raising=False)
    with pytest.raises(FileNotFoundError, match="pt_inception-2015-12-05-6726825d.pth not found.*--inception-logits"):
        load_is_inception()
    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    wrong = hub / "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's name in the hub cache is found
    torch.save({"fc.weight": torch.zeros(1000, 2048)}, wrong)
    with pytest.raises(ValueError, match=r"weights-inception.*not the 2015-12-05 Inception.*\(1008, 2048\)"):
        load_is_inception()
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"zzz")
    monkeypatch.setenv("ANODIFF_INCEPTION_LOGITS", str(garbage))
    with pytest.raises(ValueError, match="garbage.pth: cannot read the Inception weights"):
        load_is_inception()
