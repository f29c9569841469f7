"""Write example_workflows/dualanodiff_train_and_generate.json (UI) and example_workflows/api/ (API) from the graph
below.

The whole loop in one graph: Load Defect Set -> Train Dual LoRA -> Save Dual LoRA (+ Loss Graph), then the
trained MODEL/CLIP straight into Dual Sampler -> VAE Decode -> Extract Anomaly Mask -> Filter Pairs -> Export
Dataset. Run with the test venv: ``.venv-test/bin/python scripts/build_train_workflow.py`` (needs ComfyUI).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from build_multi_defect_workflow import ui_graph  # scripts/: the one group-box layout

ROOT = Path(__file__).resolve().parents[1]
NAME = "dualanodiff_train_and_generate"
SOCKETS = {  # node type -> (inputs [(name, type)], outputs [(name, type)])
    "CheckpointLoaderSimple": ([], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]),
    "DualAnoDiffLoadTrainingSet": (
        [("images", "IMAGE"), ("masks", "MASK")],
        [("images", "IMAGE"), ("masks", "MASK"), ("backgrounds", "IMAGE"), ("report", "STRING")],
    ),
    "DualAnoDiffTrain": (
        [
            ("model", "MODEL"),
            ("clip", "CLIP"),
            ("vae", "VAE"),
            ("images", "IMAGE"),
            ("masks", "MASK"),
            ("backgrounds", "IMAGE"),
            ("resume", "DUAL_ANODIFF_WEIGHTS"),
        ],
        [("model", "MODEL"), ("clip", "CLIP"), ("dual_weights", "DUAL_ANODIFF_WEIGHTS"), ("loss", "LOSS_MAP")],
    ),
    "DualAnoDiffLoadLoRA": ([("model", "MODEL"), ("clip", "CLIP")], [("MODEL", "MODEL"), ("CLIP", "CLIP")]),
    "DualAnoDiffSaveModel": ([("dual_weights", "DUAL_ANODIFF_WEIGHTS")], [("filename", "STRING")]),
    "DualAnoDiffLossGraph": ([("loss", "LOSS_MAP")], [("IMAGE", "IMAGE")]),
    "CLIPTextEncode": ([("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")]),
    "EmptyLatentImage": ([], [("LATENT", "LATENT")]),
    "DualAnoDiffSampler": (
        [
            ("model", "MODEL"),
            ("positive_global", "CONDITIONING"),
            ("positive_anomaly", "CONDITIONING"),
            ("negative", "CONDITIONING"),
            ("latent_image", "LATENT"),
        ],
        [("global", "LATENT"), ("anomaly", "LATENT"), ("pairs", "LATENT")],
    ),
    "VAEDecode": ([("samples", "LATENT"), ("vae", "VAE")], [("IMAGE", "IMAGE")]),
    "DualAnoDiffExtractMask": ([("anomaly", "IMAGE")], [("mask", "MASK"), ("overlay", "IMAGE")]),
    "DualAnoDiffFilterPairs": (
        [("image", "IMAGE"), ("mask", "MASK"), ("source", "IMAGE"), ("foreground", "MASK")],
        [("images", "IMAGE"), ("masks", "MASK"), ("report", "STRING")],
    ),
    "DualAnoDiffExportDataset": ([("images", "IMAGE"), ("masks", "MASK")], [("summary", "STRING")]),
    "PreviewImage": ([("images", "IMAGE")], []),
}
TRAIN = [5000, 2e-5, 32, 4, 32, "fixed", False, True, False, 512, True, 500, 500, "none"]
BYPASSED = {18}
"""Nodes shipped bypassed (mode 4): the later-runs branch; bypassed, Load Dual LoRA hands MODEL and CLIP on."""
# id: (type, title or None, widgets, {input: (source id, output index)}, group, (x, y))
GRAPH = {
    1: ("CheckpointLoaderSimple", None, ["v1-5-pruned-emaonly.safetensors"], {}, 1, (40, 120)),
    2: (
        "DualAnoDiffLoadTrainingSet",
        None,
        ["mvtec_ad", "bottle", "broken_large", "floor", 512, False],
        {},
        1,
        (40, 300),
    ),
    18: (
        "DualAnoDiffLoadLoRA",
        "Later runs: Load Dual LoRA (bypassed)",
        ["bottle_broken_large_00001.safetensors", 1.0, 1.0, 1.0, True],
        {"model": (1, 0), "clip": (1, 1)},
        1,
        (40, 460),
    ),
    3: (
        "DualAnoDiffTrain",
        None,
        TRAIN,
        {"model": (18, 0), "clip": (18, 1), "vae": (1, 2), "images": (2, 0), "masks": (2, 1)},
        2,
        (460, 120),
    ),
    4: ("DualAnoDiffSaveModel", None, ["bottle_broken_large", True], {"dual_weights": (3, 2)}, 2, (460, 720)),
    5: ("DualAnoDiffLossGraph", None, [768, 384], {"loss": (3, 3)}, 2, (460, 880)),
    6: ("PreviewImage", "Loss curve", [], {"images": (5, 0)}, 2, (460, 1040)),
    7: ("CLIPTextEncode", "Prompt: global", ["a vfx with sks"], {"clip": (3, 1)}, 3, (900, 120)),
    8: ("CLIPTextEncode", "Prompt: anomaly", ["sks"], {"clip": (3, 1)}, 3, (900, 300)),
    9: ("CLIPTextEncode", "Prompt: negative", [""], {"clip": (3, 1)}, 3, (900, 480)),
    10: ("EmptyLatentImage", None, [512, 512, 4], {}, 3, (900, 660)),
    11: (
        "DualAnoDiffSampler",
        None,
        [42, "randomize", 30, 2.5, "euler", "normal", 1.0],
        {
            "model": (3, 0),
            "positive_global": (7, 0),
            "positive_anomaly": (8, 0),
            "negative": (9, 0),
            "latent_image": (10, 0),
        },
        3,
        (900, 820),
    ),
    12: ("VAEDecode", "Decode global", [], {"samples": (11, 0), "vae": (1, 2)}, 4, (1340, 120)),
    13: ("VAEDecode", "Decode anomaly", [], {"samples": (11, 1), "vae": (1, 2)}, 4, (1340, 270)),
    14: ("DualAnoDiffExtractMask", None, ["u2netp", 0.5, 0, 0], {"anomaly": (13, 0)}, 4, (1340, 420)),
    15: (
        "DualAnoDiffFilterPairs",
        None,
        [0.2, 0.5, 0.3, 0.1, 0.001, 5],
        {"image": (12, 0), "mask": (14, 0)},
        4,
        (1340, 640),
    ),
    16: ("PreviewImage", "Preview pairs", [], {"images": (12, 0)}, 4, (1340, 940)),
    17: (
        "DualAnoDiffExportDataset",
        None,
        ["dualanodiff_dataset", "bottle", "broken_large", "mvtec+coco"],
        {"images": (15, 0), "masks": (15, 1)},
        5,
        (1780, 120),
    ),
}
GROUPS = {
    1: ("1. Checkpoint and defect photos", "#3f789e"),
    2: ("2. Train, save, loss", "#b06634"),
    3: ("3. Sample pairs with the trained model", "#8A8"),
    4: ("4. Masks and filtering", "#a1309b"),
    5: ("5. Dataset", "#88A"),
}
NOTES = [  # (group, text, position)
    (
        1,
        (
            "Defect photos\n\nLoad Defect Set reads an MVTec AD root (input/mvtec_ad here) with category and anomaly "
            "type, "
            "or a folder with images/ and masks/, and keeps the training third exactly as `anodiff train` does. "
            "Connect "
            "Load Image (image + mask) to its optional inputs to train on your own photos instead."
        ),
        (40, 640),
    ),
    (
        1,
        (
            "Later runs\n\nTo sample again from a saved model without training: turn Load Dual LoRA (below the "
            "checkpoint) on (select it, Ctrl+B), pick the saved file, and bypass group 2 (right-click the group, "
            "Bypass Group Nodes). Bypassed, Train Dual LoRA hands Load Dual LoRA's MODEL and CLIP on to the sampler, "
            "and "
            "the defect photos are not read."
        ),
        (40, 900),
    ),
    (
        2,
        (
            "Training\n\nThe authors' defaults: 5000 steps, rank 32, learning rate 2e-5, batch 4, 512 px, seed 32. On "
            "one "
            "modern GPU (fp16, rank 32, batch 4) that is roughly 1-2 hours; gradient_checkpointing trades about a "
            "third "
            "more time for much less memory. The progress bar shows a sampled pair every preview_every steps. Nothing "
            "trained is lost: every autosave_every steps, and on Cancel (honoured after the current step) or an error, "
            "the weights and optimiser state go to models/dualanodiff/autosave (resume_file continues them). Save Dual "
            "LoRA writes "
            "models/dualanodiff/bottle_broken_large_00001.safetensors (plus its optimiser state, so resume_file can "
            "continue it exactly)."
        ),
        (460, 1300),
    ),
    (
        3,
        (
            "Sampling\n\nThe trained MODEL/CLIP go straight to Dual Sampler: no need to save and reload first. Later "
            "runs "
            "can start from Load Dual LoRA with the saved file instead of training again (see the Later runs note)."
        ),
        (900, 1220),
    ),
    (
        5,
        (
            "Dataset\n\nFilter Pairs drops pairs whose mask cannot be trusted; Export Dataset adds the rest to "
            "output/dualanodiff_dataset in the MVTec layout with COCO annotations, never overwriting."
        ),
        (1780, 300),
    ),
]


def build_ui() -> dict:
    """The UI-format workflow (nodes with positions and widget values, links, groups, notes)."""
    nodes, links = [], []
    outputs: dict[tuple[int, int], list[int]] = {}
    for nid, (kind, _, _, wired, _, _) in GRAPH.items():
        names = [n for n, _ in SOCKETS[kind][0]]
        for name, (src, slot) in wired.items():
            link = [len(links) + 1, src, slot, nid, names.index(name), dict(SOCKETS[kind][0])[name]]
            links.append(link)
            outputs.setdefault((src, slot), []).append(link[0])
    by_target = {(link[3], link[4]): link[0] for link in links}
    for order, (nid, (kind, title, widgets, _, _, pos)) in enumerate(GRAPH.items()):
        ins, outs = SOCKETS[kind]
        node = {
            "id": nid,
            "type": kind,
            "pos": list(pos),
            "size": [320, 120],
            "flags": {},
            "order": order,
            "mode": 4 if nid in BYPASSED else 0,
            "inputs": [{"name": n, "type": t, "link": by_target.get((nid, k))} for k, (n, t) in enumerate(ins)],
            "outputs": [
                {"name": n, "type": t, "links": outputs.get((nid, k), []), "slot_index": k}
                for k, (n, t) in enumerate(outs)
            ],
            "properties": {"Node name for S&R": kind},
            "widgets_values": widgets,
        }
        if title:
            node["title"] = title
        nodes.append(node)
    group_of = {nid: spec[4] for nid, spec in GRAPH.items()}
    for k, (group, text, pos) in enumerate(NOTES):
        nid = 100 + k
        group_of[nid] = group
        nodes.append(
            {
                "id": nid,
                "type": "Note",
                "pos": list(pos),
                "size": [320, 220],
                "flags": {},
                "order": len(GRAPH) + k,
                "mode": 0,
                "inputs": [],
                "outputs": [],
                "properties": {"text": ""},
                "color": "#432",
                "bgcolor": "#653",
                "widgets_values": [text],
            }
        )
    members: dict[int, list[dict]] = {gid: [n for n in nodes if group_of[n["id"]] == gid] for gid in GROUPS}
    return ui_graph(nodes, links, GROUPS, members)


def main() -> None:
    sys.path[:0] = [str(ROOT / "tests" / "comfy"), str(ROOT / "tests")]
    from pack import import_pack
    from tiny import init_comfy
    from workflow_tools import node_classes, ui_to_api, validate_api

    init_comfy(cpu=True)
    ui = build_ui()
    classes, names = node_classes(import_pack())
    api = ui_to_api(ui, classes, names)
    problems = validate_api(api, classes)
    if problems:
        raise SystemExit("\n".join(problems))
    (ROOT / "example_workflows" / f"{NAME}.json").write_text(json.dumps(ui, indent=2) + "\n")
    (ROOT / "example_workflows" / "api" / f"{NAME}.json").write_text(json.dumps(api, indent=2) + "\n")


if __name__ == "__main__":
    main()
