"""The shipped 'train and generate' API workflow end to end on a headless server: a tiny defect set written by the
test -> Train Dual LoRA (a few steps on the tiny model) -> Save -> Dual Sampler -> masks -> Filter -> Export; then
its "later runs" path as its note says (Load Dual LoRA on, group 2 bypassed) on the saved file."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from test_e2e import by_class, swap_checkpoint_loader
from workflow_tools import API_DIR, WORKFLOWS_DIR, load_json, node_in_group, ui_to_api, validate_api

pytestmark = pytest.mark.slow

SIZE = 64


def write_defect_folder(root: Path, n: int = 3) -> None:
    """images/ + masks/: grey photos with a bright square defect each (a plain layout, all n train at floor(n/3)...)."""
    from PIL import Image

    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        photo = (rng.random((SIZE, SIZE, 3)) * 80 + 60).astype(np.uint8)
        mask = np.zeros((SIZE, SIZE), np.uint8)
        mask[16 + 4 * i : 36 + 4 * i, 20:44] = 255
        photo[mask > 0] = 230
        Image.fromarray(photo).save(root / "images" / f"{i:03d}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i:03d}.png")


def later_runs(ui: dict) -> dict:
    """The workflow as the Later runs note says: Load Dual LoRA turned on, every node of group 2 bypassed."""
    ui = copy.deepcopy(ui)
    group = next(g for g in ui["groups"] if g["title"].startswith("2."))
    for node in ui["nodes"]:
        if node["type"] == "DualAnoDiffLoadLoRA":
            assert node["mode"] == 4  # shipped bypassed: the first run trains
            node["mode"] = 0
        elif node["type"] != "Note" and node_in_group(node, group):
            node["mode"] = 4
    assert any("Later runs" in n["widgets_values"][0] for n in ui["nodes"] if n["type"] == "Note")
    return ui


def later_runs_api() -> dict:
    from pack import import_pack
    from workflow_tools import node_classes

    classes, names = node_classes(import_pack())
    api = ui_to_api(later_runs(load_json(WORKFLOWS_DIR / "dualanodiff_train_and_generate.json")), classes, names)
    assert validate_api(api, classes) == []
    return api


def test_later_runs_path_feeds_load_dual_lora_to_the_sampler_without_training(comfyui_root):
    api = later_runs_api()
    (loader,) = by_class(api, "DualAnoDiffLoadLoRA")
    assert not by_class(api, "DualAnoDiffTrain") and not by_class(api, "DualAnoDiffSaveModel")
    for nid in by_class(api, "DualAnoDiffSampler"):
        assert api[nid]["inputs"]["model"] == [loader, 0]
    for nid in by_class(api, "CLIPTextEncode"):
        assert api[nid]["inputs"]["clip"] == [loader, 1]
    shipped = load_json(API_DIR / "dualanodiff_train_and_generate.json")  # the first run trains on the checkpoint
    (train,) = by_class(shipped, "DualAnoDiffTrain")
    (checkpoint,) = by_class(shipped, "CheckpointLoaderSimple")
    assert shipped[train]["inputs"]["model"] == [checkpoint, 0] and not by_class(shipped, "DualAnoDiffLoadLoRA")


def tiny_training_graph(api: dict, tiny_outputs: list[str], folder: str, dataset: str) -> dict:
    api = swap_checkpoint_loader(copy.deepcopy(api), tiny_outputs)
    for nid in by_class(api, "DualAnoDiffLoadTrainingSet"):
        api[nid]["inputs"].update(folder=folder, category="", anomaly="", resolution=SIZE)
    for nid in by_class(api, "DualAnoDiffTrain"):
        api[nid]["inputs"].update(steps=3, rank=4, batch_size=2, resolution=SIZE, preview_every=2, learning_rate=1e-3)
    for nid in by_class(api, "DualAnoDiffSaveModel"):
        api[nid]["inputs"]["filename_prefix"] = "e2e_trained"
    for nid in by_class(api, "EmptyLatentImage"):
        api[nid]["inputs"].update(width=SIZE, height=SIZE, batch_size=2)
    for nid in by_class(api, "DualAnoDiffSampler"):
        api[nid]["inputs"].update(steps=2, seed=1)
    for nid in by_class(api, "DualAnoDiffExtractMask"):
        api[nid]["inputs"]["method"] = "grey distance"
    for nid in by_class(api, "DualAnoDiffFilterPairs"):
        api[nid]["inputs"].update(max_area=1.0, min_foreground=0.0, min_agreement=0.0, min_area=0.0, max_pieces=0)
    for nid in by_class(api, "DualAnoDiffExportDataset"):
        api[nid]["inputs"]["output_dir"] = dataset
    return api


def test_train_and_generate_workflow_runs_end_to_end(pack_server):
    server = pack_server
    write_defect_folder(server.base_dir / "input" / "defects_e2e", n=6)
    info = server.object_info()
    assert info["DualAnoDiffTrain"]["output_name"] == ["model", "clip", "dual_weights", "loss"]
    for name in ("DualAnoDiffLoadTrainingSet", "DualAnoDiffTrain", "DualAnoDiffSaveModel", "DualAnoDiffLossGraph"):
        node = info[name]
        assert node["category"].startswith("DualAnoDiff") and node["description"]
        for inputs in node["input"].values():
            for input_name, spec in inputs.items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{name}.{input_name} has no tooltip"
    tiny_outputs = info["TinySD15Loader"]["output"]
    api = load_json(API_DIR / "dualanodiff_train_and_generate.json")
    api = tiny_training_graph(api, tiny_outputs, "defects_e2e", "e2e_train_dataset")
    entry = server.run(api, timeout=180)
    assert entry["status"]["status_str"] == "success", server.log()[-3000:]
    saved = server.base_dir / "models" / "dualanodiff" / "e2e_trained_00001.safetensors"
    assert saved.is_file()
    with open(saved, "rb") as f:  # safetensors header: metadata of the run
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    assert header["__metadata__"]["steps"] == "3" and header["__metadata__"]["train_images"] == "2"
    assert (server.base_dir / "models" / "dualanodiff_state" / "e2e_trained_00001.state.safetensors").is_file()
    assert (
        "e2e_trained_00001.safetensors"
        in server.object_info("DualAnoDiffLoadLoRA")["DualAnoDiffLoadLoRA"]["input"]["required"]["lora_name"][0]
    )
    summary = [v for out in entry["outputs"].values() for v in out.get("text", [])]
    assert any("e2e_trained_00001" in s for s in summary), summary
    exported = list((server.output_dir / "e2e_train_dataset").rglob("*.png"))
    assert exported, f"nothing exported; outputs: {entry['outputs']}"
    # later runs: the saved file through Load Dual LoRA, nothing trained again
    later = tiny_training_graph(later_runs_api(), tiny_outputs, "defects_e2e", "e2e_later_dataset")
    for nid in by_class(later, "DualAnoDiffLoadLoRA"):
        later[nid]["inputs"]["lora_name"] = "e2e_trained_00001.safetensors"
    entry = server.run(later, timeout=180)
    assert entry["status"]["status_str"] == "success", server.log()[-3000:]
    assert not (server.base_dir / "models" / "dualanodiff" / "e2e_trained_00002.safetensors").exists()
    assert list((server.output_dir / "e2e_later_dataset").rglob("*.png")), f"outputs: {entry['outputs']}"
