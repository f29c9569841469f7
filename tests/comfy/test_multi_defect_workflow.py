"""The shipped 'two defect types on one part' workflow runs headless with two tiny Dual LoRAs: the saved image has
the photo's full size and its pixels outside the two grown regions, the label mask holds a defect id per region,
and the export names each defect's type in COCO."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_e2e import RUN_TIMEOUT, by_class, need_u2netp, server, swap_checkpoint_loader  # noqa: F401
from workflow_tools import API_DIR, load_json

pytestmark = pytest.mark.slow
PHOTO = "normal_part_multi_defect.png"
H, W = 240, 320


def write_photo(path):
    from PIL import Image

    yy, xx = np.mgrid[0:H, 0:W]
    rgb = np.stack([40 + xx * 0.3, 60 + yy * 0.2, np.full((H, W), 90.0)], axis=-1)
    rgb[((yy - H / 2) / (0.4 * H)) ** 2 + ((xx - W / 2) / (0.4 * W)) ** 2 < 1] = (200, 190, 170)
    Image.fromarray(rgb.astype(np.uint8)).save(path)
    return rgb.astype(np.uint8)


def test_two_defect_types_on_one_part_run_headless(server, tmp_path):  # noqa: F811
    import torch
    from pack import import_pack

    from anodiff.regions.stitch import grown_region

    need_u2netp()
    from dual_files import write_dual_weights

    models = server.base_dir / "models" / "dualanodiff"
    write_dual_weights(models / "tiny_crack.safetensors", seed=3)
    write_dual_weights(models / "tiny_scratch.safetensors", seed=8)
    photo = write_photo(server.base_dir / "input" / PHOTO)
    tiny_outputs = server.object_info("TinySD15Loader")["TinySD15Loader"]["output"]
    api = swap_checkpoint_loader(load_json(API_DIR / "dualanodiff_multi_defect.json"), tiny_outputs)
    loras = iter(["tiny_crack.safetensors", "tiny_scratch.safetensors"])
    for nid in sorted(by_class(api, "DualAnoDiffLoadLoRA"), key=int):
        api[nid]["inputs"]["lora_name"] = next(loras)
    for nid in by_class(api, "DualAnoDiffSampler"):
        api[nid]["inputs"].update(steps=2, seed=5)
    for nid in by_class(api, "DualAnoDiffCropRegion"):
        api[nid]["inputs"]["working_size"] = 64
    for nid in by_class(api, "DualAnoDiffExtractMask"):
        api[nid]["inputs"].update(method="grey distance", threshold=0.0)
    (region_node,) = by_class(api, "DualAnoDiffRandomRegion")
    settings = {**api[region_node]["inputs"], "min_size": 0.1, "max_size": 0.15, "seed": 3}
    api[region_node]["inputs"] = settings
    (load,) = by_class(api, "LoadImage")
    api[load]["inputs"]["image"] = PHOTO
    (export,) = by_class(api, "DualAnoDiffExportDefects")
    api[export]["inputs"]["output_dir"] = f"multi_{tmp_path.name}"

    entry = server.run(api, timeout=RUN_TIMEOUT * 2)
    assert entry["status"]["status_str"] == "success", json.dumps(entry["status"])[-2000:]
    saved = [p for p in server.output_files(entry) if p.name.startswith("multi_defect_0")]
    (image_file,) = saved
    from PIL import Image

    with Image.open(image_file) as saved_image:
        image = np.asarray(saved_image.convert("RGB"))
    assert image.shape == (H, W, 3)  # the photo's own size, never squashed to 512 or 64

    # the regions the workflow drew, recomputed in-process with the same node and settings
    node = import_pack().nodes.NODE_CLASS_MAPPINGS["DualAnoDiffRandomRegion"]()
    widgets = {k: v for k, v in settings.items() if not isinstance(v, list)}
    zones, _, _ = node.sample(torch.from_numpy(photo / 255.0).float()[None], **widgets)
    grown = grown_region(zones[0].numpy(), 4) | grown_region(zones[1].numpy(), 4)
    assert (image[~grown] == photo[~grown]).all()
    assert (image[zones[0] > 0] != photo[zones[0] > 0]).any() and (image[zones[1] > 0] != photo[zones[1] > 0]).any()

    from anodiff.dataset.coco import finalise

    finalise(server.output_dir / f"multi_{tmp_path.name}", "object")  # what queueing Finalise Dataset does
    coco = json.loads((server.output_dir / f"multi_{tmp_path.name}" / "annotations" / "object.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    assert {names[a["category_id"]] for a in coco["annotations"]} == {"crack", "scratch"}
    assert sorted(a["defect_id"] for a in coco["annotations"]) == [1, 2]
