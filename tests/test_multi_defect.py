"""Several defects per image: three regions, two tiny dual models (a defect type per region), one label mask with
three ids, three COCO annotations that round-trip through pycocotools; overlapping regions are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_pipeline import dual_file

from anodiff.regions.multi_defect import (
    add_defects,
    check_disjoint,
    defects_coco,
    label_mask,
    pipeline_generator,
    regions_from_labels,
    sample_disjoint,
)
from anodiff.regions.stitch import grown_region

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def two_pipes(tmp_path_factory):
    from tiny_diffusers import randomize_, save_tiny_sd15

    from anodiff import DualAdapter, DualConfig, to_dual_file
    from anodiff.sd15.load import load_sd15
    from anodiff.sd15.pipeline import DualAnoDiffPipeline

    sd = save_tiny_sd15(tmp_path_factory.mktemp("tiny_sd15"))
    first = dual_file()
    second = to_dual_file(randomize_(DualAdapter(DualConfig(rank=4), *_widths(first)), std=0.1, seed=11))
    return DualAnoDiffPipeline.from_sd15(load_sd15(sd), first), DualAnoDiffPipeline.from_sd15(load_sd15(sd), second)


def _widths(dual):
    from tiny_diffusers import TINY_CHANNELS, TINY_CONTEXT

    return TINY_CHANNELS, TINY_CONTEXT


def photo_and_label() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    photo = rng.integers(40, 200, (300, 400, 3), dtype=np.uint8)
    label = np.zeros((300, 400), np.uint8)
    label[40:90, 50:110] = 1
    label[150:200, 200:260] = 2
    label[220:280, 300:370] = 3
    return photo, label


def test_three_regions_two_models_give_three_ids_and_three_coco_annotations(two_pipes, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.mask import decode

    photo, label = photo_and_label()
    regions = regions_from_labels(label)
    crack, scratch = (
        pipeline_generator(p, seed=5, mask_method="grey", threshold=0.0, steps=2, scheduler="ddim") for p in two_pipes
    )
    result = add_defects(photo, regions, [crack, scratch, crack], context=1.5, working=64, feather=2)
    assert result.image.shape == photo.shape and result.image.dtype == np.uint8
    outside = ~np.any([grown_region(r, 2) for r in regions], axis=0)
    assert result.image[outside].tobytes() == photo[outside].tobytes()
    assert set(np.unique(result.label)) == {0, 1, 2, 3}
    for k, region in enumerate(regions):
        assert not (result.label == k + 1)[~region].any()  # each id stays in its region
    assert [w.box for w in result.windows] and result.boxes[1] == (200, 150, 60, 50)
    types = ["crack", "scratch", "crack"]
    coco = defects_coco(result.label, types, "object/test/mixed/000.png")
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco))
    api = COCO(str(path))
    anns = api.loadAnns(api.getAnnIds(imgIds=[1]))
    assert len(anns) == 3
    assert [api.loadCats(a["category_id"])[0]["name"] for a in anns] == types
    for ann in anns:
        decoded = decode(api.annToRLE(ann)).astype(bool)
        assert np.array_equal(decoded, result.label == ann["defect_id"])
        assert ann["area"] == decoded.sum()


def test_models_differ_per_region(two_pipes):
    photo, label = photo_and_label()
    regions = regions_from_labels(label)[:1]
    kw = {"mask_method": "grey", "threshold": 0.0, "steps": 2, "scheduler": "ddim"}
    a = add_defects(photo, regions, pipeline_generator(two_pipes[0], 5, **kw), working=64)
    b = add_defects(photo, regions, pipeline_generator(two_pipes[1], 5, **kw), working=64)
    assert not np.array_equal(a.image, b.image)


def test_overlapping_regions_are_refused_and_random_ones_resampled():
    a = np.zeros((100, 100), bool)
    a[10:40, 10:40] = True
    b = np.zeros((100, 100), bool)
    b[30:60, 30:60] = True
    with pytest.raises(ValueError, match="regions 1 and 2 overlap"):
        check_disjoint([a, b])
    c = np.zeros((100, 100), bool)
    c[42:60, 42:60] = True
    with pytest.raises(ValueError, match="within the feather"):
        check_disjoint([a, c], feather=4)
    check_disjoint([a, c], feather=1)
    with pytest.raises(ValueError, match="overlap"):
        add_defects(np.zeros((100, 100, 3), np.uint8), [a, b], lambda p, r, k: (p, r))
    fg = np.ones((200, 200), bool)
    for seed in range(10):
        regions = sample_disjoint(fg, 4, (0.15, 0.3), (seed, 0), feather=3)
        check_disjoint(regions, 3)
    with pytest.raises(ValueError, match="no room left|found no place"):
        sample_disjoint(np.ones((40, 40), bool), 30, (0.4, 0.5), (0, 0))


def test_label_images_and_masks():
    with pytest.raises(ValueError, match="no region"):
        regions_from_labels(np.zeros((5, 5), np.uint8))
    masks = [np.eye(4, dtype=bool), np.fliplr(np.eye(4, dtype=bool)) & ~np.eye(4, dtype=bool)]
    assert label_mask(masks).max() == 2 and label_mask(masks)[0, 0] == 1
