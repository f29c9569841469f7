"""Write example_workflows/dualanodiff_multi_defect.json (UI) and example_workflows/api/ (API) from the graph below.

Two defect types on one part at full resolution: one Random Defect Region node draws two regions on the photo;
Crop Region (region_index 0) -> Region Latent -> Dual Sampler with the first Dual LoRA -> decode -> Stitch Region,
then the same on the stitched photo with region_index 1 and the second Dual LoRA; Defect Labels merges the two
masks, Export Defects writes one COCO annotation per defect. Run with the test venv:
``.venv-test/bin/python scripts/build_multi_defect_workflow.py`` (needs ComfyUI, as the tests do).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = "dualanodiff_multi_defect"
SOCKETS = {  # node type -> (inputs [(name, type)], outputs [(name, type)])
    "CheckpointLoaderSimple": ([], [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]),
    "DualAnoDiffLoadLoRA": ([("model", "MODEL"), ("clip", "CLIP")], [("MODEL", "MODEL"), ("CLIP", "CLIP")]),
    "CLIPTextEncode": ([("clip", "CLIP")], [("CONDITIONING", "CONDITIONING")]),
    "LoadImage": ([], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "DualAnoDiffRandomRegion": (
        [("image", "IMAGE"), ("foreground", "MASK")],
        [("regions", "MASK"), ("foreground", "MASK"), ("preview", "IMAGE")],
    ),
    "DualAnoDiffCropRegion": (
        [("image", "IMAGE"), ("region", "MASK")],
        [("image", "IMAGE"), ("region", "MASK"), ("stitch", "DUALANODIFF_STITCH")],
    ),
    "DualAnoDiffRegionLatent": ([("vae", "VAE"), ("source", "IMAGE"), ("region", "MASK")], [("LATENT", "LATENT")]),
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
    "DualAnoDiffStitchRegion": (
        [("image", "IMAGE"), ("stitch", "DUALANODIFF_STITCH"), ("mask", "MASK")],
        [("image", "IMAGE"), ("mask", "MASK")],
    ),
    "DualAnoDiffDefectLabels": (
        [("mask_1", "MASK"), ("mask_2", "MASK")],
        [("labels", "MASK"), ("mask", "MASK"), ("preview", "IMAGE")],
    ),
    "DualAnoDiffExportDefects": ([("images", "IMAGE"), ("labels", "MASK")], [("summary", "STRING")]),
    "SaveImage": ([("images", "IMAGE")], []),
    "PreviewImage": ([("images", "IMAGE")], []),
    "MaskToImage": ([("mask", "MASK")], [("IMAGE", "IMAGE")]),
}
SAMPLER = [42, "randomize", 30, 2.5, "euler", "normal", 1.0]
# id: (type, title or None, widgets, {input: (source id, output index)}, group, (x, y))
GRAPH = {
    1: ("CheckpointLoaderSimple", None, ["v1-5-pruned-emaonly.safetensors"], {}, 1, (40, 120)),
    2: (
        "DualAnoDiffLoadLoRA",
        "Dual LoRA: defect type 1 (crack)",
        ["crack.safetensors", 1.0, 1.0, 1.0, True],
        {"model": (1, 0), "clip": (1, 1)},
        1,
        (40, 280),
    ),
    3: (
        "DualAnoDiffLoadLoRA",
        "Dual LoRA: defect type 2 (scratch)",
        ["scratch.safetensors", 1.0, 1.0, 1.0, True],
        {"model": (1, 0), "clip": (1, 1)},
        1,
        (40, 470),
    ),
    4: ("CLIPTextEncode", "Crack prompt: global", ["a vfx with sks"], {"clip": (2, 1)}, 2, (420, 120)),
    5: ("CLIPTextEncode", "Crack prompt: anomaly", ["sks"], {"clip": (2, 1)}, 2, (420, 300)),
    6: ("CLIPTextEncode", "Crack prompt: negative", [""], {"clip": (2, 1)}, 2, (420, 480)),
    7: ("CLIPTextEncode", "Scratch prompt: global", ["a vfx with sks"], {"clip": (3, 1)}, 2, (420, 660)),
    8: ("CLIPTextEncode", "Scratch prompt: anomaly", ["sks"], {"clip": (3, 1)}, 2, (420, 840)),
    9: ("CLIPTextEncode", "Scratch prompt: negative", [""], {"clip": (3, 1)}, 2, (420, 1020)),
    10: ("LoadImage", "Normal photo (full resolution)", ["normal_product.png", "image"], {}, 3, (900, 120)),
    11: (
        "DualAnoDiffRandomRegion",
        None,
        [2, 0.06, 0.12, 0.5, 2.0, "ellipse", 7, "fixed", 4, 0.5, 0],
        {"image": (10, 0)},
        3,
        (900, 460),
    ),
    12: ("PreviewImage", "Preview regions", [], {"images": (11, 2)}, 3, (900, 900)),
    13: (
        "DualAnoDiffCropRegion",
        "Crop Region: defect 1",
        [2.0, 512, 0],
        {"image": (10, 0), "region": (11, 0)},
        4,
        (1340, 120),
    ),
    14: ("DualAnoDiffRegionLatent", None, [1], {"vae": (1, 2), "source": (13, 0), "region": (13, 1)}, 4, (1340, 320)),
    15: (
        "DualAnoDiffSampler",
        "Dual Sampler: crack",
        SAMPLER,
        {
            "model": (2, 0),
            "positive_global": (4, 0),
            "positive_anomaly": (5, 0),
            "negative": (6, 0),
            "latent_image": (14, 0),
        },
        4,
        (1340, 480),
    ),
    16: ("VAEDecode", "Decode crack (global)", [], {"samples": (15, 0), "vae": (1, 2)}, 4, (1340, 820)),
    17: ("VAEDecode", "Decode crack (anomaly)", [], {"samples": (15, 1), "vae": (1, 2)}, 4, (1340, 920)),
    18: ("DualAnoDiffExtractMask", None, ["u2netp", 0.5, 0, 0], {"anomaly": (17, 0)}, 4, (1340, 1020)),
    19: (
        "DualAnoDiffStitchRegion",
        "Stitch Region: defect 1",
        [4, "feather"],
        {"image": (16, 0), "stitch": (13, 2), "mask": (18, 0)},
        4,
        (1340, 1220),
    ),
    20: (
        "DualAnoDiffCropRegion",
        "Crop Region: defect 2",
        [2.0, 512, 1],
        {"image": (19, 0), "region": (11, 0)},
        5,
        (1780, 120),
    ),
    21: ("DualAnoDiffRegionLatent", None, [1], {"vae": (1, 2), "source": (20, 0), "region": (20, 1)}, 5, (1780, 320)),
    22: (
        "DualAnoDiffSampler",
        "Dual Sampler: scratch",
        SAMPLER,
        {
            "model": (3, 0),
            "positive_global": (7, 0),
            "positive_anomaly": (8, 0),
            "negative": (9, 0),
            "latent_image": (21, 0),
        },
        5,
        (1780, 480),
    ),
    23: ("VAEDecode", "Decode scratch (global)", [], {"samples": (22, 0), "vae": (1, 2)}, 5, (1780, 820)),
    24: ("VAEDecode", "Decode scratch (anomaly)", [], {"samples": (22, 1), "vae": (1, 2)}, 5, (1780, 920)),
    25: ("DualAnoDiffExtractMask", None, ["u2netp", 0.5, 0, 0], {"anomaly": (24, 0)}, 5, (1780, 1020)),
    26: (
        "DualAnoDiffStitchRegion",
        "Stitch Region: defect 2",
        [4, "feather"],
        {"image": (23, 0), "stitch": (20, 2), "mask": (25, 0)},
        5,
        (1780, 1220),
    ),
    27: ("DualAnoDiffDefectLabels", None, [4], {"mask_1": (19, 1), "mask_2": (26, 1)}, 6, (2220, 120)),
    28: ("SaveImage", "Save image", ["dualanodiff/multi_defect"], {"images": (26, 0)}, 6, (2220, 320)),
    29: ("MaskToImage", None, [], {"mask": (27, 1)}, 6, (2220, 620)),
    30: ("SaveImage", "Save mask", ["dualanodiff/multi_defect_mask"], {"images": (29, 0)}, 6, (2220, 720)),
    31: ("PreviewImage", "Preview labels", [], {"images": (27, 2)}, 6, (2220, 1020)),
    32: (
        "DualAnoDiffExportDefects",
        None,
        ["crack, scratch", "dualanodiff_dataset", "object", "multi_defect"],
        {"images": (26, 0), "labels": (27, 0)},
        6,
        (2660, 120),
    ),
}
GROUPS = {
    1: ("1. Two Dual LoRAs", "#3f789e"),
    2: ("2. Prompts per model", "#8A8"),
    3: ("3. Photo, two regions", "#2a7b6f"),
    4: ("4. Defect 1", "#b06634"),
    5: ("5. Defect 2 (on defect 1)", "#a1309b"),
    6: ("6. Labels, save, export", "#88A"),
}
NOTES = {
    1: (
        (
            "Two defect types on one part\n\nEach Load Dual LoRA holds one trained defect type (here crack and "
            "scratch, "
            "files in models/dualanodiff). Both sit on the same SD1.5 checkpoint. The first defect is made with the "
            "first "
            "model, the second with the second; use the same file twice for two defects of one type."
        ),
        (40, 660),
    ),
    3: (
        (
            "Regions\n\nRandom Defect Region draws count=2 regions on the object of the full-resolution photo (no "
            "resize: "
            "Crop Region does that per defect). The regions must not overlap: Crop Region refuses overlapping ones, so "
            "change the seed or lower the sizes if it does. Draw your own regions as a MASK batch instead if you like."
        ),
        (900, 980),
    ),
    4: (
        (
            "Crop and stitch\n\nCrop Region cuts a window of context x the region's box (snapped to 64 px, inside the "
            "photo) and resizes it so its longer side is working_size (512 for SD1.5). After sampling, Stitch Region "
            "pastes the window back at full resolution: outside the region grown by the feather the photo is "
            "unchanged, "
            "pixel for pixel; blend=poisson matches the lighting instead of feathering."
        ),
        (1340, 1300),
    ),
    5: (
        (
            "Defect 2\n\nThe second Crop Region takes the stitched photo from defect 1 and region_index 1, so the "
            "second "
            "defect is added to the same part, next to the first one, by the second model."
        ),
        (1780, 1300),
    ),
    6: (
        (
            "Labels and export\n\nDefect Labels merges the two full-size masks into one label mask: 1 for the crack, 2 "
            "for the scratch. Export Defects adds the image, its union mask (MVTec) and one COCO annotation per "
            "defect, "
            "whose category is the type named in defect_types, to output/dualanodiff_dataset."
        ),
        (2660, 420),
    ),
}


HEIGHTS = {  # node body heights as the frontend draws them, so stacked nodes never overlap
    "CheckpointLoaderSimple": 100,
    "DualAnoDiffLoadLoRA": 190,
    "CLIPTextEncode": 130,
    "LoadImage": 320,
    "DualAnoDiffRandomRegion": 330,
    "PreviewImage": 250,
    "DualAnoDiffCropRegion": 150,
    "DualAnoDiffRegionLatent": 100,
    "DualAnoDiffSampler": 290,
    "VAEDecode": 50,
    "DualAnoDiffExtractMask": 150,
    "DualAnoDiffStitchRegion": 120,
    "DualAnoDiffDefectLabels": 120,
    "SaveImage": 270,
    "MaskToImage": 30,
    "DualAnoDiffExportDefects": 170,
    "Note": 200,
}
GAP, TOP = 50, 110


def stack(nodes: list[dict]) -> None:
    """Place each column's nodes (same group and x; notes under their group's first column) one below another."""
    columns: dict[tuple[int, int], list[dict]] = {}
    for node in nodes:
        group = GRAPH[node["id"]][4] if node["id"] in GRAPH else list(NOTES)[node["id"] - 100]
        x = node["pos"][0] if node["id"] in GRAPH else min(GRAPH[n][5][0] for n in GRAPH if GRAPH[n][4] == group)
        node["pos"][0] = x
        columns.setdefault((group, x), []).append(node)
    for column in columns.values():
        y = TOP
        for node in sorted(column, key=lambda n: (n["type"] == "Note", n["pos"][1])):
            node["pos"][1] = y
            y += node["size"][1] + GAP


def build_ui() -> dict:
    nodes, links, order = [], [], 0
    outputs: dict[tuple[int, int], list[int]] = {}
    for nid, (kind, title, widgets, wired, _, _) in GRAPH.items():
        for name, (src, slot) in wired.items():
            link_id = len(links) + 1
            ty = dict(SOCKETS[kind][0])[name]
            links.append([link_id, src, slot, nid, [n for n, _ in SOCKETS[kind][0]].index(name), ty])
            outputs.setdefault((src, slot), []).append(link_id)
    by_target = {(l[3], l[4]): l[0] for l in links}
    for nid, (kind, title, widgets, wired, group, pos) in GRAPH.items():
        ins, outs = SOCKETS[kind]
        node = {
            "id": nid,
            "type": kind,
            "pos": list(pos),
            "size": [320, HEIGHTS[kind]],
            "flags": {},
            "order": order,
            "mode": 0,
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
        order += 1
    for k, (group, (text, pos)) in enumerate(NOTES.items()):
        nodes.append(
            {
                "id": 100 + k,
                "type": "Note",
                "pos": list(pos),
                "size": [320, HEIGHTS["Note"]],
                "flags": {},
                "order": order,
                "mode": 0,
                "inputs": [],
                "outputs": [],
                "properties": {"text": ""},
                "color": "#432",
                "bgcolor": "#653",
                "widgets_values": [text],
            }
        )
        order += 1
    stack(nodes)
    members: dict[int, list[dict]] = {}
    for node in nodes:
        gid = GRAPH[node["id"]][4] if node["id"] in GRAPH else list(NOTES)[node["id"] - 100]
        members.setdefault(gid, []).append(node)
    return ui_graph(nodes, links, GROUPS, members)


def ui_graph(nodes: list[dict], links: list[list], groups: dict, members: dict[int, list[dict]]) -> dict:
    """The UI-format workflow: ``nodes`` and ``links`` as built, each of ``groups`` (id -> (title, colour)) boxed
    round its ``members`` with a margin and the title bar (the builders of every bundled workflow use this)."""
    boxes_of = []
    for gid, (title, colour) in groups.items():
        boxes = [
            (n["pos"][0], n["pos"][1], n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1]) for n in members[gid]
        ]
        x0, y0 = min(b[0] for b in boxes) - 20, min(b[1] for b in boxes) - 70
        x1, y1 = max(b[2] for b in boxes) + 20, max(b[3] for b in boxes) + 20
        boxes_of.append(
            {
                "id": gid,
                "title": title,
                "bounding": [x0, y0, x1 - x0, y1 - y0],
                "color": colour,
                "font_size": 24,
                "flags": {},
            }
        )
    return {
        "last_node_id": max(n["id"] for n in nodes),
        "last_link_id": len(links),
        "nodes": nodes,
        "links": links,
        "groups": boxes_of,
        "config": {},
        "extra": {"ds": {"scale": 0.55, "offset": [60, 40]}},
        "version": 0.4,
    }


def main() -> None:
    sys.path[:0] = [str(ROOT / "tests" / "comfy"), str(ROOT / "tests")]
    from pack import import_pack
    from tiny import init_comfy
    from workflow_tools import node_classes, ui_to_api

    init_comfy(cpu=True)
    ui = build_ui()
    api = ui_to_api(ui, *node_classes(import_pack()))
    (ROOT / "example_workflows" / f"{NAME}.json").write_text(json.dumps(ui, indent=2) + "\n")
    (ROOT / "example_workflows" / "api" / f"{NAME}.json").write_text(json.dumps(api, indent=2) + "\n")


if __name__ == "__main__":
    main()
