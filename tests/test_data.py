"""Few-shot training data (``anodiff.data.fewshot``) on tiny MVTec-like and plain folders written in ``tmp_path``."""

from __future__ import annotations

import os
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from anodiff.data import fewshot as data
from anodiff.data import objects, training_set
from anodiff.data.fewshot import DataError, FewShotDataset, Sample

S = 32  # image side; datasets below use resolution=S so pixels map one to one


def assert_close(actual: torch.Tensor, expected: torch.Tensor, atol: float = 1e-6) -> None:
    """Like ``torch.testing.assert_close``, whose first call costs seconds of lazy imports."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert (actual - expected).abs().max().item() <= atol


def write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array), path
    return path


def pattern_rgb(seed: int = 0) -> np.ndarray:
    """(S, S, 3) uint8 RGB, different in every pixel and under every flip: red = column, green = row."""
    yy, xx = np.mgrid[0:S, 0:S]
    rgb = np.stack([xx * 7 + 10, yy * 7 + 10, np.full_like(xx, 40 + seed)], axis=2)
    return rgb.astype(np.uint8)


def defect_mask() -> np.ndarray:
    """(S, S) uint8 0/255, an L-shaped region in the top-left quadrant (asymmetric under both flips)."""
    m = np.zeros((S, S), np.uint8)
    m[3:12, 4:7] = 255
    m[9:12, 4:15] = 255
    return m


def make_pair(image_path: Path, mask_path: Path, seed: int = 0) -> Sample:
    write(image_path, pattern_rgb(seed)[..., ::-1])  # cv2 writes BGR
    write(mask_path, defect_mask())
    return Sample(image_path, mask_path)


@pytest.fixture
def mvtec(tmp_path: Path) -> Path:
    root = tmp_path / "mvtec"
    for category, kinds in (("bottle", {"crack": 4, "hole": 2}), ("cable", {"bent_wire": 1})):
        for kind, n in kinds.items():
            for i in reversed(range(n)):
                make_pair(
                    root / category / "test" / kind / f"{i:03d}.png",
                    root / category / "ground_truth" / kind / f"{i:03d}_mask.png",
                    seed=i,
                )
        write(root / category / "test" / "good" / "000.png", pattern_rgb()[..., ::-1])
        for i in (2, 0, 1):
            write(root / category / "train" / "good" / f"{i:03d}.png", pattern_rgb(i)[..., ::-1])
    return root


class FakeU2Net:
    """Stands in for ``U2NetP``: saliency is a disc in the upper-left, and every call is counted."""

    constructed = 0
    calls = 0

    def __init__(self, *args, **kwargs) -> None:
        FakeU2Net.constructed += 1

    def saliency(self, image: np.ndarray) -> np.ndarray:
        FakeU2Net.calls += 1
        out = np.zeros(image.shape[:2], np.float32)
        cv2.circle(out, (image.shape[1] // 3, image.shape[0] // 3), image.shape[0] // 4, 1.0, -1)
        out[0, :] = 0.4  # a soft row, kept soft by the background (no threshold)
        return out


@pytest.fixture
def fake_u2net(monkeypatch) -> type[FakeU2Net]:
    FakeU2Net.constructed = FakeU2Net.calls = 0
    for module in (objects, training_set):  # where object_mask and FewShotDataset build the default model
        monkeypatch.setattr(module, "U2NetP", FakeU2Net)
    return FakeU2Net


# layouts


def test_mvtec_layout_found_sorted_with_masks(mvtec):
    samples = data.find_samples(mvtec, "bottle", "crack")
    assert [s.image.name for s in samples] == ["000.png", "001.png", "002.png", "003.png"]
    assert samples[1] == Sample(mvtec / "bottle/test/crack/001.png", mvtec / "bottle/ground_truth/crack/001_mask.png")
    assert all(s.mask.is_file() for s in samples)


def test_mvtec_layout_needs_category_and_anomaly(mvtec):
    with pytest.raises(ValueError, match="category.*bottle, cable"):
        data.find_samples(mvtec)
    with pytest.raises(FileNotFoundError, match="crack, hole"):
        data.find_samples(mvtec, "bottle", "scratch")
    with pytest.raises(FileNotFoundError, match="carpet"):
        data.find_samples(mvtec, "carpet", "hole")
    with pytest.raises(ValueError, match="normal images"):
        data.find_samples(mvtec, "bottle", "good")


def test_plain_layout_pairs_by_stem_any_extension(tmp_path):
    root = tmp_path / "plain"
    write(root / "images" / "b.jpg", pattern_rgb()[..., ::-1])
    write(root / "images" / "a.png", pattern_rgb()[..., ::-1])
    write(root / "images" / "c.bmp", pattern_rgb()[..., ::-1])
    (root / "images" / "notes.txt").write_text("not an image")
    write(root / "masks" / "a.bmp", defect_mask())
    write(root / "masks" / "b.png", defect_mask())
    write(root / "masks" / "c_mask.tif", defect_mask())
    samples = data.find_samples(root)
    assert [(s.image.name, s.mask.name) for s in samples] == [
        ("a.png", "a.bmp"),
        ("b.jpg", "b.png"),
        ("c.bmp", "c_mask.tif"),
    ]
    with pytest.raises(ValueError, match="plain"):
        data.find_samples(root, "bottle", "crack")
    write(root / "masks" / "a.png", defect_mask())
    with pytest.raises(DataError, match="a.bmp.*a.png|a.png.*a.bmp"):
        data.find_samples(root)


def test_list_jobs_skips_good_and_cache_folders(mvtec):
    (mvtec / "bottle" / "test" / data.CACHE_FOLDER / "object_masks").mkdir(parents=True)
    (mvtec / "license.txt").write_text("x")
    assert data.list_jobs(mvtec) == [("bottle", "crack"), ("bottle", "hole"), ("cable", "bent_wire")]


def test_normal_images_are_train_good_sorted(mvtec):
    assert [p.name for p in data.normal_images(mvtec, "bottle")] == ["000.png", "001.png", "002.png"]
    assert all(p.parent == mvtec / "cable" / "train" / "good" for p in data.normal_images(mvtec, "cable"))


# split


@pytest.mark.parametrize(
    "n, floor, authors", [(12, 4, 5), (10, 3, 3), (8, 2, 3), (9, 3, 3), (7, 2, 3), (16, 5, 6), (2, 1, 1), (1, 1, 1)]
)
def test_split_rules_match_documented_examples(n, floor, authors):
    samples = [Sample(Path(f"/d/{i:03d}.png"), Path(f"/m/{i:03d}_mask.png")) for i in range(n)]
    shuffled = samples[:]
    random.Random(n).shuffle(shuffled)
    assert data.split_train(shuffled) == samples[:floor]
    assert data.split_train(shuffled, rule="authors") == samples[:authors]


def test_split_edge_cases():
    assert data.split_train([]) == []
    with pytest.raises(ValueError, match="floor, authors"):
        data.split_train([], rule="ceil")


# validation


def test_valid_samples_pass(mvtec):
    samples = data.find_samples(mvtec, "bottle", "crack")
    assert data.validate_samples(samples) == samples


def test_missing_mask_names_image_and_expected_path(mvtec):
    samples = data.find_samples(mvtec, "bottle", "crack")
    samples[2].mask.unlink()
    with pytest.raises(DataError) as err:
        data.validate_samples(samples)
    assert str(samples[2].image) in str(err.value) and str(samples[2].mask) in str(err.value)
    assert data.validate_samples(samples, strict=False) == samples[:2] + samples[3:]


def test_unreadable_image_is_named(tmp_path):
    sample = make_pair(tmp_path / "images" / "x.png", tmp_path / "masks" / "x.png")
    sample.image.write_bytes(b"this is not a png")
    with pytest.raises(DataError, match=f"cannot read image {sample.image}"):
        data.validate_samples([sample])
    with pytest.raises(DataError, match="does not exist"):
        data.validate_samples([Sample(tmp_path / "nope.png", sample.mask)])


def test_size_mismatch_names_both_files_and_sizes(tmp_path):
    sample = make_pair(tmp_path / "images" / "x.png", tmp_path / "masks" / "x.png")
    write(sample.mask, np.full((20, 24), 255, np.uint8))
    with pytest.raises(DataError) as err:
        data.validate_samples([sample])
    message = str(err.value)
    assert str(sample.mask) in message and str(sample.image) in message
    assert "24x20" in message and f"{S}x{S}" in message


def test_empty_anomaly_folder_is_named(mvtec):
    empty = mvtec / "bottle" / "test" / "scratch"
    empty.mkdir()
    (empty / "Thumbs.db").write_bytes(b"")
    with pytest.raises(DataError, match=str(empty)):
        data.find_samples(mvtec, "bottle", "scratch")


def test_all_zero_mask_is_named(tmp_path):
    sample = make_pair(tmp_path / "images" / "x.png", tmp_path / "masks" / "x.png")
    write(sample.mask, np.zeros((S, S), np.uint8))
    with pytest.raises(DataError, match=f"{sample.mask} is all zero"):
        data.validate_samples([sample])
    write(sample.mask, (defect_mask() > 0).astype(np.uint8) * 3)  # a label map outside VisA's folders
    with pytest.raises(DataError, match=f"{sample.mask} is all zero"):
        data.validate_samples([sample])
    write(sample.mask, (defect_mask() > 0).astype(np.uint8))  # a 0/1 mask: its 1s are defect (common.mask_rule)
    assert data.validate_samples([sample]) == [sample]
    with pytest.raises(DataError, match="all zero"):
        FewShotDataset([Sample(sample.image, write(tmp_path / "z.png", np.zeros((S, S), np.uint8)))])


# loading


def test_read_image_handles_grey_alpha_16bit_and_rgb_order(tmp_path):
    rgb = pattern_rgb()
    bgr = rgb[..., ::-1]
    np.testing.assert_allclose(data.read_image(write(tmp_path / "c.png", bgr)), rgb / 255.0, atol=1e-6)
    bgra = np.concatenate([bgr, np.full((S, S, 1), 7, np.uint8)], axis=2)
    np.testing.assert_allclose(data.read_image(write(tmp_path / "a.png", bgra)), rgb / 255.0, atol=1e-6)
    grey = data.read_image(write(tmp_path / "g.png", rgb[..., 0]))
    assert grey.shape == (S, S, 3) and np.array_equal(grey[..., 0], grey[..., 2])
    np.testing.assert_allclose(grey[..., 1], rgb[..., 0] / 255.0, atol=1e-6)
    deep = data.read_image(write(tmp_path / "d.png", bgr.astype(np.uint16) * 257))
    assert deep.dtype == np.float32 and deep.shape == (S, S, 3)
    np.testing.assert_allclose(deep, rgb / 255.0, atol=1e-6)


# dataset


def test_item_targets_and_binary_mask(mvtec):
    samples = data.find_samples(mvtec, "bottle", "crack")
    item = FewShotDataset(samples, resolution=S, flips=False)[1]
    assert set(item) == {"image", "mask", "anomaly"}
    assert all(v.dtype == torch.float32 for v in item.values())
    assert item["image"].shape == (3, S, S) and item["mask"].shape == (1, S, S)
    expected = torch.from_numpy(pattern_rgb(1)).permute(2, 0, 1).float() / 255.0 * 2.0 - 1.0
    assert_close(item["image"], expected)
    assert_close(item["mask"][0], torch.from_numpy(defect_mask() / 255.0).float())
    inside = item["mask"].expand(3, -1, -1) > 0
    assert torch.equal(item["anomaly"][inside], item["image"][inside])
    assert (item["anomaly"][~inside] == 0).all() and inside.any() and (~inside).any()


def test_resized_mask_is_thresholded_to_binary(tmp_path):
    image = write(tmp_path / "images" / "x.png", cv2.resize(pattern_rgb(), (40, 40))[..., ::-1])
    soft = np.tile(np.linspace(0, 255, 40).astype(np.uint8), (40, 1))  # a horizontal ramp
    item = FewShotDataset([Sample(image, write(tmp_path / "masks" / "x.png", soft))], resolution=16, flips=False)[0]
    values = set(item["mask"].unique().tolist())
    assert values == {0.0, 1.0}
    assert item["mask"][0, :, :7].sum() == 0 and item["mask"][0, :, 9:].min() == 1  # the ramp crosses 0.5 mid-way
    assert item["image"].shape == (3, 16, 16) and -1 <= item["image"].min() and item["image"].max() <= 1
    assert (item["anomaly"][item["mask"].expand(3, -1, -1) == 0] == 0).all()


def _which_flip(flipped: torch.Tensor, reference: torch.Tensor) -> tuple[bool, bool]:
    matches = [
        (h, v)
        for h in (False, True)
        for v in (False, True)
        if torch.equal(flipped, torch.flip(reference, [d for d, on in ((-1, h), (-2, v)) if on]))
    ]
    assert len(matches) == 1, "the test pattern must identify the flip uniquely"
    return matches[0]


def test_flips_identical_across_all_targets(mvtec, fake_u2net):
    samples = data.find_samples(mvtec, "bottle", "crack")
    reference = FewShotDataset(samples, resolution=S, flips=False, background=True)
    dataset = FewShotDataset(samples, resolution=S, background=True, seed=3)
    seen = set()
    for epoch in range(12):
        dataset.set_epoch(epoch)
        for index in range(len(dataset)):
            item, ref = dataset[index], reference[index]
            flip = _which_flip(item["image"], ref["image"])
            assert flip == dataset.flips_for(index)
            dims = [d for d, on in ((-1, flip[0]), (-2, flip[1])) if on]
            for key in ("mask", "anomaly", "background"):
                assert torch.equal(item[key], torch.flip(ref[key], dims)), (epoch, index, key)
            seen.add(flip)
    assert seen == {(False, False), (True, False), (False, True), (True, True)}


def test_flips_reproducible_per_seed_epoch_and_index(mvtec):
    samples = data.find_samples(mvtec, "bottle", "crack")
    a, b = FewShotDataset(samples, resolution=S, seed=5), FewShotDataset(samples, resolution=S, seed=5)
    draws = {}
    for epoch in range(8):
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        draws[epoch] = [a.flips_for(i) for i in range(len(a))]
        assert draws[epoch] == [b.flips_for(i) for i in range(len(b))]
        assert all(torch.equal(a[i]["image"], b[i]["image"]) for i in range(len(a)))
    assert len({tuple(d) for d in draws.values()}) > 1, "set_epoch must change the flips"
    other = FewShotDataset(samples, resolution=S, seed=6)
    other_draws = {}
    for epoch in range(8):
        other.set_epoch(epoch)
        other_draws[epoch] = [other.flips_for(i) for i in range(len(other))]
    assert other_draws != draws, "the seed must change the flips"


def test_flips_off_never_flip(mvtec):
    samples = data.find_samples(mvtec, "bottle", "crack")
    dataset = FewShotDataset(samples, resolution=S, flips=False, seed=1)
    expected = torch.from_numpy(pattern_rgb(0)).permute(2, 0, 1).float() / 255.0 * 2.0 - 1.0
    for epoch in range(20):
        dataset.set_epoch(epoch)
        assert dataset.flips_for(0) == (False, False)
        assert_close(dataset[0]["image"], expected)


def test_dataset_argument_errors(mvtec):
    samples = data.find_samples(mvtec, "bottle", "crack")
    with pytest.raises(ValueError, match="multiple of 8"):
        FewShotDataset(samples, resolution=30)
    with pytest.raises(DataError, match="no training samples"):
        FewShotDataset([])
    with pytest.raises(IndexError):
        FewShotDataset(samples[:1], resolution=S)[1]


# BCM backgrounds


def test_object_mask_cached_reused_and_refreshed_when_stale(mvtec, fake_u2net):
    image = mvtec / "bottle" / "test" / "crack" / "000.png"
    first = data.object_mask(image)
    cache = mvtec / "bottle" / "test" / data.CACHE_FOLDER / "object_masks" / "crack" / "000.png"
    assert data.object_mask_path(image) == cache and cache.is_file()
    assert fake_u2net.calls == 1 and first.dtype == np.float32 and first.shape == (S, S)
    assert first.min() == 0.0 and first.max() == 1.0
    np.testing.assert_allclose(first[0, S // 2], 0.4, atol=1 / 255)
    second = data.object_mask(image)
    assert fake_u2net.calls == 1, "a fresh cache must not run the model"
    assert np.array_equal(first, second)
    assert data.list_jobs(mvtec) == [("bottle", "crack"), ("bottle", "hole"), ("cable", "bent_wire")]
    # the same stem in another anomaly type gets its own file
    data.object_mask(mvtec / "bottle" / "test" / "hole" / "000.png")
    assert fake_u2net.calls == 2 and (cache.parent.parent / "hole" / "000.png").is_file()
    later = cache.stat().st_mtime_ns + 5_000_000_000
    os.utime(image, ns=(later, later))
    data.object_mask(image)
    assert fake_u2net.calls == 3, "an image newer than its cache must be recomputed"
    data.object_mask(image, cache_dir=mvtec / "elsewhere")
    assert fake_u2net.calls == 4 and (mvtec / "elsewhere" / "crack" / "000.png").is_file()


def test_dataset_background_blackens_object_and_uses_cache(mvtec, fake_u2net):
    samples = data.find_samples(mvtec, "bottle", "crack")[:2]
    dataset = FewShotDataset(samples, resolution=S, flips=False, background=True)
    assert fake_u2net.calls == 2 and fake_u2net.constructed == 1
    saliency = FakeU2Net().saliency(np.zeros((S, S, 3), np.float32))
    image = torch.from_numpy(pattern_rgb(1)).permute(2, 0, 1).float() / 255.0
    expected = image * (1 - torch.from_numpy(saliency)) * 2.0 - 1.0
    assert_close(dataset[1]["background"], expected)
    assert (dataset[1]["background"][:, saliency == 1] == -1).all()
    FewShotDataset(samples, resolution=S, background=True)
    assert fake_u2net.calls == 3, "the second dataset must read both masks from the cache"


def test_blackened_background_is_soft_and_checks_shape():
    image = np.full((4, 4, 3), 0.8, np.float32)
    alpha = np.array([[0.0, 0.25, 0.5, 1.0]] * 4, np.float32)
    out = data.blackened_background(image, alpha)
    np.testing.assert_allclose(out[0, :, 0], [0.8, 0.6, 0.4, 0.0], atol=1e-6)
    with pytest.raises(ValueError, match="size"):
        data.blackened_background(image, alpha[:3])


@pytest.fixture(scope="module")
def u2net_model(u2net):
    return u2net


def test_real_u2netp_background_blackens_object_on_plain_background(tmp_path, u2net_model):
    h, w = 192, 256
    truth = np.zeros((h, w), np.uint8)
    cv2.circle(truth, (w // 2, h // 2), 60, 1, -1)
    texture = np.random.default_rng(0).uniform(0.7, 1.0, (h, w, 1))
    rgb = np.full((h, w, 3), 0.9) * np.ones_like(texture)
    rgb = np.where(truth[..., None] > 0, np.array([0.8, 0.15, 0.1]) * texture, rgb)
    path = write(tmp_path / "good" / "000.png", np.round(rgb * 255).astype(np.uint8)[..., ::-1])
    background = data.background_image(path, model=u2net_model)
    assert background.shape == (h, w, 3) and background.dtype == np.float32
    assert data.object_mask_path(path).is_file()
    core = cv2.erode(truth, np.ones((15, 15), np.uint8)) > 0
    ring = cv2.dilate(truth, np.ones((31, 31), np.uint8)) == 0
    assert background[core].mean() < 0.05, "the object must turn black"
    assert background[ring].mean() > 0.85, "the plain background must stay (0.9)"


# describe


def test_describe_lists_exact_files(mvtec):
    samples = data.split_train(data.find_samples(mvtec, "bottle", "crack"))
    samples[0].mask.unlink()
    text = data.describe(samples)
    assert text.splitlines()[0] == f"1 sample under {mvtec / 'bottle'}:"
    assert "test/crack/000.png" in text and "ground_truth/crack/000_mask.png [missing]" in text
    assert "001.png" not in text
    assert data.describe([]) == "0 samples"


def test_object_mask_cache_is_written_atomically_with_the_usual_file_mode(mvtec, fake_u2net):
    """The cache goes through ``common.imageio.write_png``: no temporary left beside it, and the mode ``open()``
    gives (0666 less the umask), as before, not ``mkstemp``'s 0600."""
    import stat

    image = mvtec / "bottle" / "test" / "crack" / "000.png"
    previous = os.umask(0o022)
    try:
        first = data.object_mask(image)
    finally:
        os.umask(previous)
    cache = data.object_mask_path(image)
    assert sorted(p.name for p in cache.parent.iterdir()) == ["000.png"]
    assert stat.S_IMODE(cache.stat().st_mode) == 0o644
    assert np.array_equal(data.object_mask(image), first) and fake_u2net.calls == 1
