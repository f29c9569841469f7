"""The shipped API workflows run end to end on a headless ComfyUI server with a tiny SD1.5-shaped model.

The checkpoint loader is swapped for the test-only ``TinySD15Loader``; the Dual LoRA file is a tiny random one
written into the server's ``models/dualanodiff``; sizes, batch and steps are cut down. Everything else (the four
DualAnoDiff nodes, decoding, mask extraction, saving) runs as shipped.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dual_files import write_dual_weights
from workflow_tools import API_DIR, load_json

pytestmark = pytest.mark.slow

OUR_NODES = {
    "DualAnoDiffLoadLoRA": (
        ["model", "clip", "lora_name", "strength_global", "strength_anomaly", "strength_clip"],
        ["saim"],
        ["MODEL", "CLIP"],
    ),
    "DualAnoDiffSampler": (
        [
            "model",
            "positive_global",
            "positive_anomaly",
            "negative",
            "latent_image",
            "seed",
            "steps",
            "cfg",
            "sampler_name",
            "scheduler",
            "denoise",
        ],
        [],
        ["global", "anomaly", "pairs"],
    ),
    "DualAnoDiffPairLatent": (["latent"], ["anomaly"], ["pairs"]),
    "DualAnoDiffPairConditioning": (["positive_global", "positive_anomaly"], [], ["CONDITIONING"]),
    "DualAnoDiffSplitPairs": (["pairs"], [], ["global", "anomaly"]),
    "DualAnoDiffBackgroundCompensation": (["model", "vae", "background", "strength"], ["object_mask"], ["MODEL"]),
    "DualAnoDiffExtractMask": (["anomaly", "method", "threshold", "grow", "min_area"], [], ["mask", "overlay"]),
}
"""class -> (required inputs in order, optional inputs, output names)."""

SIZE, BATCH, STEPS = 64, 2, 2
PREFIXES = ("image", "anomaly", "mask", "overlay")
NORMAL_IMAGE = "normal_product_e2e.png"
RUN_TIMEOUT = 45.0


def u2netp_available() -> bool:
    from anodiff.common.assets import u2netp_path

    try:
        u2netp_path()
    except FileNotFoundError:
        return False
    return True


def need_u2netp() -> None:
    """U²-Net-P comes from scripts/fetch_assets.py; skip locally without it, fail under CI."""
    if not u2netp_available():
        if os.environ.get("CI"):
            pytest.fail("u2netp.onnx is missing under CI; run scripts/fetch_assets.py", pytrace=False)
        pytest.skip("u2netp.onnx not fetched (scripts/fetch_assets.py)")


def write_normal_image(path: Path) -> None:
    """A defect-free 'product photo': a bright disc on a shaded background, not square, so the resize crops."""
    from PIL import Image

    h, w = 72, 96
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([40 + x * 0.8, 60 + y * 0.5, np.full((h, w), 90.0)], axis=-1)
    disc = (y - h / 2) ** 2 + (x - w / 2) ** 2 < (h / 3) ** 2
    rgb[disc] = (200, 190, 170)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def server(pack_server):
    """The pack server with the tiny weight files and the normal image in place (written before any POST)."""
    models = pack_server.base_dir / "models" / "dualanodiff"
    write_dual_weights(models / "tiny_dual.safetensors", bcm=False)
    write_dual_weights(models / "tiny_dual_bcm.safetensors", bcm=True)
    write_normal_image(pack_server.base_dir / "input" / NORMAL_IMAGE)
    return pack_server


def by_class(api: dict[str, Any], class_type: str) -> list[str]:
    return [nid for nid, node in api.items() if node["class_type"] == class_type]


def swap_checkpoint_loader(api: dict[str, Any], tiny_outputs: list[str]) -> dict[str, Any]:
    """Replace every CheckpointLoaderSimple by a TinySD15Loader and re-point its MODEL/CLIP/VAE links."""
    api = copy.deepcopy(api)
    checkpoint_outputs = ["MODEL", "CLIP", "VAE"]
    for ckpt in by_class(api, "CheckpointLoaderSimple"):
        tiny = str(max(int(nid) for nid in api) + 1)
        api[tiny] = {"class_type": "TinySD15Loader", "inputs": {}, "_meta": {"title": "Tiny SD1.5 (test)"}}
        del api[ckpt]
        for node in api.values():
            for name, value in node["inputs"].items():
                if isinstance(value, list) and len(value) == 2 and value[0] == ckpt:
                    node["inputs"][name] = [tiny, tiny_outputs.index(checkpoint_outputs[value[1]])]
    assert not by_class(api, "CheckpointLoaderSimple")
    return api


def tiny_graph(api: dict[str, Any], tiny_outputs: list[str], *, lora: str, method: str, seed: int) -> dict[str, Any]:
    """The shipped graph cut down to the tiny model: 64x64, batch 2, 2 steps, our files."""
    api = swap_checkpoint_loader(api, tiny_outputs)
    for nid in by_class(api, "DualAnoDiffLoadLoRA"):
        api[nid]["inputs"]["lora_name"] = lora
    for nid in by_class(api, "EmptyLatentImage"):
        api[nid]["inputs"].update(width=SIZE, height=SIZE, batch_size=BATCH)
    for nid in by_class(api, "DualAnoDiffSampler") + by_class(api, "KSampler"):
        api[nid]["inputs"].update(steps=STEPS, seed=seed)
    for nid in by_class(api, "KSamplerAdvanced"):
        api[nid]["inputs"].update(steps=STEPS, noise_seed=seed)
    for nid in by_class(api, "ImageScale"):
        api[nid]["inputs"].update(width=SIZE, height=SIZE)
    for nid in by_class(api, "LoadImage"):
        api[nid]["inputs"]["image"] = NORMAL_IMAGE
    for nid in by_class(api, "DualAnoDiffExtractMask"):
        api[nid]["inputs"]["method"] = method
    for nid in by_class(api, "DualAnoDiffRegionLatent"):
        api[nid]["inputs"]["batch_size"] = BATCH
    return api


def saved_pngs(output_dir: Path) -> set[Path]:
    return set(output_dir.rglob("*.png"))


def read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        assert image.size == (SIZE, SIZE), f"{path.name} is {image.size}"
        return np.asarray(image.convert("RGB"))


def test_object_info_lists_the_dualanodiff_nodes(server):
    info = server.object_info()
    for name, (required, optional, outputs) in OUR_NODES.items():
        assert name in info, f"{name} not registered; server log:\n{server.log()[-3000:]}"
        node = info[name]
        assert list(node["input"]["required"]) == required
        assert list(node["input"].get("optional", {})) == optional
        assert node["output_name"] == outputs
        assert node["category"].startswith("DualAnoDiff") and node["description"]
        assert node["python_module"] == "custom_nodes.dualanodiff"
    assert "tiny_dual.safetensors" in info["DualAnoDiffLoadLoRA"]["input"]["required"]["lora_name"][0]
    assert info["DualAnoDiffExtractMask"]["input"]["required"]["method"][0] == ["u2netp", "grey distance"]
    # LoadImage lists <base>/input, where the fixture put the normal image
    assert NORMAL_IMAGE in server.object_info("LoadImage")["LoadImage"]["input"]["required"]["image"][0]


RUNS = [
    pytest.param("dualanodiff_generate_pairs", "tiny_dual.safetensors", "u2netp", 1, id="pairs-u2netp"),
    pytest.param("dualanodiff_generate_pairs", "tiny_dual.safetensors", "grey distance", 2, id="pairs-grey"),
    pytest.param("dualanodiff_generate_pairs_bcm", "tiny_dual_bcm.safetensors", "grey distance", 3, id="bcm-grey"),
    pytest.param("dualanodiff_region_control", "tiny_dual.safetensors", "grey distance", 4, id="region-grey"),
    pytest.param("dualanodiff_any_sampler", "tiny_dual.safetensors", "grey distance", 5, id="any-sampler-grey"),
]


@pytest.mark.parametrize(("workflow", "lora", "method", "seed"), RUNS)
def test_workflow_runs_and_saves_pairs_with_masks(server, workflow, lora, method, seed):
    region = workflow.endswith("region_control")
    if method == "u2netp" or workflow.endswith("_bcm") or region:  # BCM and regions find the object with U²-Net-P
        need_u2netp()
    tiny_outputs = server.object_info("TinySD15Loader")["TinySD15Loader"]["output"]
    api = tiny_graph(load_json(API_DIR / f"{workflow}.json"), tiny_outputs, lora=lora, method=method, seed=seed)
    before = saved_pngs(server.output_dir)
    entry = server.run(api, timeout=RUN_TIMEOUT)
    assert entry["status"]["status_str"] == "success"
    new = saved_pngs(server.output_dir) - before
    listed = {p for p in server.output_files(entry)}
    assert listed == new, "history and disk disagree on what this run saved"

    files = {}
    for prefix in PREFIXES:
        files[prefix] = sorted(p for p in new if p.parent.name == "dualanodiff" and p.name.startswith(prefix + "_"))
        assert len(files[prefix]) == BATCH, f"{prefix}: {[p.name for p in files[prefix]]}"
    assert sum(len(v) for v in files.values()) == len(new)

    for image, anomaly, mask, overlay in zip(*(files[p] for p in PREFIXES)):
        pixels = {
            name: read_png(path)
            for name, path in (("image", image), ("anomaly", anomaly), ("mask", mask), ("overlay", overlay))
        }
        m = pixels["mask"]
        assert (m[..., 0] == m[..., 1]).all() and (m[..., 0] == m[..., 2]).all(), "mask PNG is not grey"
        assert set(np.unique(m)) <= {0, 255}, f"mask values {np.unique(m)}"
        defect = m[..., 0] == 255
        if region:  # the saved mask is clipped to the region; the overlay shows the unclipped one
            continue
        # the overlay is the anomaly image, tinted only on the mask: files with the same index belong together
        assert (pixels["overlay"][~defect] == pixels["anomaly"][~defect]).all()
        if defect.any():
            assert (pixels["overlay"][defect] != pixels["anomaly"][defect]).any()
        assert not np.array_equal(pixels["image"], pixels["anomaly"])
