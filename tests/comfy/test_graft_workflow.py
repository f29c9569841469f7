"""The bundled "one-shot defect" workflow: wired as documented, with O2MAG's defaults (UI/API consistency and
validation against the node schemas run in test_workflows.py for every workflow)."""

from __future__ import annotations

from workflow_tools import API_DIR, load_json


def test_one_shot_defect_workflow_wiring_and_defaults():
    api = load_json(API_DIR / "dualanodiff_one_shot_defect.json")
    (graft_id,) = [k for k, v in api.items() if v["class_type"] == "DualAnoDiffOneShotDefect"]
    node = api[graft_id]["inputs"]
    kind = {k: v["class_type"] for k, v in api.items()}
    assert kind[node["model"][0]] == kind[node["clip"][0]] == kind[node["vae"][0]] == "CheckpointLoaderSimple"
    for image, mask in (("reference", "reference_mask"), ("normal", "target_mask")):
        assert kind[node[image][0]] == "LoadImage" and node[image] == [node[mask][0], 0] and node[mask][1] == 1
    assert node["reference"][0] != node["normal"][0]
    assert (node["steps"], node["cfg"], node["optimise_steps"], node["optimise_lr"]) == (50, 7.5, 500, 0.003)
    saves = {
        v["inputs"]["filename_prefix"]: v["inputs"]["images"] for v in api.values() if v["class_type"] == "SaveImage"
    }
    assert saves["dualanodiff/one_shot"] == [graft_id, 0]
    mask_image = saves["dualanodiff/one_shot_mask"][0]
    assert kind[mask_image] == "MaskToImage" and api[mask_image]["inputs"]["mask"] == [graft_id, 1]
