"""The shipped workflows against the node schemas: UI and API twins describe the same, valid graph (no server)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from pack import import_pack
from workflow_tools import (
    API_DIR,
    FRONTEND_ONLY,
    WORKFLOWS_DIR,
    WorkflowError,
    api_edges,
    api_literals,
    api_workflow_paths,
    check_ui_structure,
    is_widget,
    load_json,
    node_in_group,
    return_names,
    return_types,
    schema_inputs,
    ui_to_api,
    ui_workflow_paths,
    validate_api,
)

EXPECTED = {"dualanodiff_generate_pairs", "dualanodiff_generate_pairs_bcm", "dualanodiff_any_sampler"}
OUR_NODES = {"DualAnoDiffLoadLoRA", "DualAnoDiffSampler", "DualAnoDiffBackgroundCompensation", "DualAnoDiffExtractMask"}
MODULAR_NODES = {"DualAnoDiffPairLatent", "DualAnoDiffPairConditioning", "DualAnoDiffSplitPairs"}
SAVE_PREFIXES = {"dualanodiff/image", "dualanodiff/anomaly", "dualanodiff/mask", "dualanodiff/overlay"}
UI_PATHS = ui_workflow_paths()


def by_stem(paths: list[Path]) -> dict[str, Path]:
    return {p.stem: p for p in paths}


@pytest.fixture(scope="module")
def schemas(comfyui_root):
    from workflow_tools import node_classes

    return node_classes(import_pack())


@pytest.fixture(scope="module")
def classes(schemas):
    return schemas[0]


def ids(paths):
    return [p.stem for p in paths]


def nodes_of(api, class_type):
    return {nid: node for nid, node in api.items() if node["class_type"] == class_type}


def source(api, node_id, name):
    """(class_type, output_index, source_id) feeding input ``name`` of node ``node_id``."""
    src_id, index = api[node_id]["inputs"][name]
    return api[src_id]["class_type"], index, src_id


def test_every_ui_workflow_has_an_api_twin_and_no_strays():
    ui, api = by_stem(ui_workflow_paths()), by_stem(api_workflow_paths())
    assert EXPECTED <= set(ui), f"missing UI workflows: {EXPECTED - set(ui)}"
    assert set(ui) == set(api), f"UI without API: {set(ui) - set(api)}, API without UI: {set(api) - set(ui)}"
    # ComfyUI lists every *.json at the top of example_workflows/ as a template; API files must stay out of it.
    assert all(load_json(p).get("nodes") is not None for p in ui.values()), (
        "an API-format file sits in example_workflows/"
    )
    assert API_DIR.parent == WORKFLOWS_DIR


@pytest.mark.parametrize("path", UI_PATHS, ids=ids(UI_PATHS))
def test_ui_workflow_is_consistent(path):
    ui = load_json(path)
    assert check_ui_structure(ui) == []
    assert ui["version"] == 0.4 and ui["config"] == {} and "ds" in ui["extra"]
    for node in ui["nodes"]:
        assert isinstance(node["pos"], list) and len(node["pos"]) == 2 and len(node["size"]) == 2
        assert node["mode"] in (0, 4) and node["flags"] == {}  # 4: bypassed, a branch a Note tells when to use
        assert any(node_in_group(node, group) for group in ui["groups"]), f"node {node['id']} is outside every group"
    notes = [n for n in ui["nodes"] if n["type"] == "Note"]
    assert len(notes) >= 4, "explain the settings in Note nodes"
    for note in notes:
        assert note["inputs"] == [] and note["outputs"] == []
        assert len(note["widgets_values"]) == 1 and len(note["widgets_values"][0]) > 40
    assert all(group["title"] for group in ui["groups"]) and len(ui["groups"]) >= 4


@pytest.mark.parametrize("path", UI_PATHS, ids=ids(UI_PATHS))
def test_ui_slots_match_node_classes(path, classes):
    for node in load_json(path)["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        cls = classes[node["type"]]
        names, kinds = return_names(cls), return_types(cls)
        if not node["type"].startswith("DualAnoDiff"):  # newer ComfyUI appends outputs (SaveImage -> images)
            names, kinds = names[: len(node["outputs"])], kinds[: len(node["outputs"])]
        assert [o["name"] for o in node["outputs"]] == names, node["id"]
        assert [o["type"] for o in node["outputs"]] == kinds, node["id"]
        sockets = {name: kind for name, kind, opts, _ in schema_inputs(cls) if not is_widget(kind, opts)}
        for slot in node["inputs"]:
            if "widget" in slot:  # a widget converted to a socket
                continue
            assert sockets.get(slot["name"]) == slot["type"], f"node {node['id']} input {slot['name']}"
        required = {name for name, kind, opts, req in schema_inputs(cls) if req and not is_widget(kind, opts)}
        assert required <= {slot["name"] for slot in node["inputs"]}, f"node {node['id']} lacks sockets"


@pytest.mark.parametrize("path", UI_PATHS, ids=ids(UI_PATHS))
def test_ui_and_api_describe_the_same_graph(path, schemas):
    classes, names = schemas
    converted = ui_to_api(load_json(path), classes, names)
    shipped = load_json(API_DIR / path.name)
    assert sorted(converted, key=int) == sorted(shipped, key=int)
    assert {k: v["class_type"] for k, v in converted.items()} == {k: v["class_type"] for k, v in shipped.items()}
    assert api_edges(converted) == api_edges(shipped)
    assert api_literals(converted) == api_literals(shipped)
    assert {k: v["_meta"]["title"] for k, v in converted.items()} == {
        k: v["_meta"]["title"] for k, v in shipped.items()
    }


@pytest.mark.parametrize("path", api_workflow_paths(), ids=ids(api_workflow_paths()))
def test_api_workflow_validates_against_input_types(path, classes):
    api = load_json(path)
    assert validate_api(api, classes) == []
    used = {n["class_type"] for n in api.values()}
    assert not set(nodes_of(api, "Note")), "Note nodes are frontend-only"
    if "DualAnoDiffOneShotDefect" in used:  # training-free: no dual model (test_graft_workflow.py checks it)
        return
    sampling = {"DualAnoDiffSampler"} if "DualAnoDiffSampler" in used else MODULAR_NODES  # one path or the other
    source = {"DualAnoDiffTrain"} if "DualAnoDiffTrain" in used else {"DualAnoDiffLoadLoRA"}  # trained or loaded
    assert (
        OUR_NODES - {"DualAnoDiffBackgroundCompensation", "DualAnoDiffSampler", "DualAnoDiffLoadLoRA"}
        | sampling
        | source
        <= used
    )
    assert not set(nodes_of(api, "Note")), "Note nodes are frontend-only"


@pytest.mark.parametrize("name", sorted(EXPECTED - {"dualanodiff_any_sampler"}))
def test_generate_pairs_settings(name):
    api = load_json(API_DIR / f"{name}.json")
    bcm = name.endswith("_bcm")
    (ckpt,) = nodes_of(api, "CheckpointLoaderSimple")
    assert api[ckpt]["inputs"]["ckpt_name"] == "v1-5-pruned-emaonly.safetensors"
    (loader,) = nodes_of(api, "DualAnoDiffLoadLoRA")
    assert api[loader]["inputs"]["lora_name"] == "my_defect.safetensors"
    assert source(api, loader, "model")[:2] == ("CheckpointLoaderSimple", 0)
    assert source(api, loader, "clip")[:2] == ("CheckpointLoaderSimple", 1)
    (sampler,) = nodes_of(api, "DualAnoDiffSampler")
    s = api[sampler]["inputs"]
    assert (s["steps"], s["cfg"], s["denoise"]) == (50, 2.0 if bcm else 2.5, 1.0)
    prompts = {}
    for role in ("positive_global", "positive_anomaly", "negative"):
        kind, index, src = source(api, sampler, role)
        assert (kind, index) == ("CLIPTextEncode", 0)
        assert source(api, src, "clip")[:2] == ("DualAnoDiffLoadLoRA", 1)
        prompts[role] = api[src]["inputs"]["text"]
    assert prompts == {"positive_global": "a vfx with sks", "positive_anomaly": "sks", "negative": ""}
    kind, _, latent = source(api, sampler, "latent_image")
    assert kind == "EmptyLatentImage" and api[latent]["inputs"] == {"width": 512, "height": 512, "batch_size": 4}
    model_kind, _, model_src = source(api, sampler, "model")
    if bcm:
        assert model_kind == "DualAnoDiffBackgroundCompensation"
        bcm_inputs = api[model_src]["inputs"]
        assert source(api, model_src, "model")[:2] == ("DualAnoDiffLoadLoRA", 0)
        assert source(api, model_src, "vae")[:2] == ("CheckpointLoaderSimple", 2)
        chain, _, src = source(api, model_src, "background")
        while chain != "LoadImage":  # e.g. through a resize
            chain, _, src = source(api, src, "image")
        assert api[src]["inputs"]["image"] == "normal_product.png"
        assert bcm_inputs["strength"] == 1.0
    else:
        assert model_kind == "DualAnoDiffLoadLoRA"
    # decode both branches; the mask comes from the anomaly branch only
    decodes = {source(api, nid, "samples")[1]: nid for nid in nodes_of(api, "VAEDecode")}
    assert set(decodes) == {0, 1} and all(source(api, d, "samples")[2] == sampler for d in decodes.values())
    (mask,) = nodes_of(api, "DualAnoDiffExtractMask")
    assert source(api, mask, "anomaly")[2] == decodes[1]
    saves = {node["inputs"]["filename_prefix"]: nid for nid, node in nodes_of(api, "SaveImage").items()}
    assert set(saves) == SAVE_PREFIXES
    assert source(api, saves["dualanodiff/image"], "images")[2] == decodes[0]
    assert source(api, saves["dualanodiff/anomaly"], "images")[2] == decodes[1]
    assert source(api, saves["dualanodiff/overlay"], "images")[1:] == (1, mask)
    to_image = source(api, saves["dualanodiff/mask"], "images")
    assert to_image[0] == "MaskToImage" and source(api, to_image[2], "mask")[1:] == (0, mask)


# ----------------------------------------------------------------------------------------------- the converter itself


def ksampler_ui(widgets):
    return {
        "nodes": [
            {
                "id": 3,
                "type": "KSampler",
                "inputs": [
                    {"name": n, "type": t, "link": None}
                    for n, t in [
                        ("model", "MODEL"),
                        ("positive", "CONDITIONING"),
                        ("negative", "CONDITIONING"),
                        ("latent_image", "LATENT"),
                    ]
                ],
                "outputs": [],
                "widgets_values": widgets,
                "mode": 0,
            },
            {"id": 9, "type": "Note", "widgets_values": ["ignored"], "mode": 0},
        ],
        "links": [],
    }


def test_converter_skips_seed_control_and_notes(schemas):
    classes, names = schemas
    api = ui_to_api(ksampler_ui([7, "fixed", 20, 8.0, "euler", "normal", 1.0]), classes, names)
    assert list(api) == ["3"]
    assert api["3"]["inputs"] == {
        "seed": 7,
        "steps": 20,
        "cfg": 8.0,
        "sampler_name": "euler",
        "scheduler": "normal",
        "denoise": 1.0,
    }
    assert api["3"]["_meta"]["title"] == "KSampler"
    problems = validate_api(api, classes)
    assert {p.split("required input ")[-1] for p in problems} == {
        "'model' missing",
        "'positive' missing",
        "'negative' missing",
        "'latent_image' missing",
    }


@pytest.mark.parametrize(
    ("widgets", "message"),
    [
        ([7, 20, 8.0, "euler", "normal", 1.0], "not one of"),  # control value forgotten
        ([7, "randomize", 20, 8.0, "euler", "normal"], "ends before"),
        ([7, "randomize", 20, 8.0, "euler", "normal", 1.0, 5], "left over"),
    ],
)
def test_converter_rejects_misaligned_widgets(schemas, widgets, message):
    with pytest.raises(WorkflowError, match=message):
        ui_to_api(ksampler_ui(widgets), *schemas)


def test_validator_catches_bad_graphs(classes):
    api = load_json(API_DIR / "dualanodiff_generate_pairs.json")
    broken = copy.deepcopy(api)
    (sampler,) = nodes_of(broken, "DualAnoDiffSampler")
    (latent,) = nodes_of(broken, "EmptyLatentImage")
    (mask,) = nodes_of(broken, "DualAnoDiffExtractMask")
    decode = next(iter(nodes_of(broken, "VAEDecode")))
    broken[sampler]["inputs"]["latent_image"] = [decode, 0]
    broken[sampler]["inputs"]["cfg"] = 500.0
    broken[sampler]["inputs"]["sampler_name"] = "no-such-sampler"
    broken[latent]["inputs"]["colour"] = "red"
    broken[mask]["inputs"]["method"] = "otsu"
    broken["99"] = {"class_type": "NoSuchNode", "inputs": {}}
    problems = "\n".join(validate_api(broken, classes))
    for expected in (
        "wants LATENT, gets IMAGE",
        "'cfg' = 500.0 outside",
        "'no-such-sampler' is not one of",
        "'colour' is not in INPUT_TYPES",
        "'otsu' is not one of",
        "NoSuchNode): unknown class_type",
    ):
        assert expected in problems
