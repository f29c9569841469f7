"""Write example_workflows/dualanodiff_one_shot_defect.json (UI) and example_workflows/api/ (API): the
training-free graft mode.

A checkpoint, the reference defect photo (its mask painted in LoadImage's mask editor), the normal photo (the target
mask painted the same way), One-Shot Defect, and the image + mask saved. The layout code is
``build_multi_defect_workflow``'s, given this graph. Run with the test venv:
``.venv-test/bin/python scripts/build_graft_workflow.py`` (needs ComfyUI, as the tests do).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_multi_defect_workflow as layout

from anodiff.graft.config import NEGATIVE

NAME = "dualanodiff_one_shot_defect"
SOCKETS = {
    "CheckpointLoaderSimple": layout.SOCKETS["CheckpointLoaderSimple"],
    "LoadImage": layout.SOCKETS["LoadImage"],
    "DualAnoDiffOneShotDefect": (
        [
            ("model", "MODEL"),
            ("clip", "CLIP"),
            ("vae", "VAE"),
            ("reference", "IMAGE"),
            ("reference_mask", "MASK"),
            ("normal", "IMAGE"),
            ("target_mask", "MASK"),
        ],
        [("image", "IMAGE"), ("mask", "MASK")],
    ),
    "SaveImage": layout.SOCKETS["SaveImage"],
    "MaskToImage": layout.SOCKETS["MaskToImage"],
}
GRAFT = ["object", "defect", 50, 7.5, 500, 0.003, 0, "fixed", 0.0314, 4, NEGATIVE]
GRAPH = {
    1: ("CheckpointLoaderSimple", None, ["v1-5-pruned-emaonly.safetensors"], {}, 1, (40, 120)),
    2: ("LoadImage", "Reference defect (paint its mask)", ["reference_defect.png", "image"], {}, 2, (420, 120)),
    3: ("LoadImage", "Normal photo (paint the target mask)", ["normal_product.png", "image"], {}, 3, (800, 120)),
    4: (
        "DualAnoDiffOneShotDefect",
        None,
        GRAFT,
        {
            "model": (1, 0),
            "clip": (1, 1),
            "vae": (1, 2),
            "reference": (2, 0),
            "reference_mask": (2, 1),
            "normal": (3, 0),
            "target_mask": (3, 1),
        },
        4,
        (1180, 120),
    ),
    5: ("SaveImage", "Save image", ["dualanodiff/one_shot"], {"images": (4, 0)}, 5, (1560, 120)),
    6: ("MaskToImage", None, [], {"mask": (4, 1)}, 5, (1560, 450)),
    7: ("SaveImage", "Save mask", ["dualanodiff/one_shot_mask"], {"images": (6, 0)}, 5, (1560, 550)),
}
GROUPS = {
    1: ("1. SD1.5 (no training)", "#3f789e"),
    2: ("2. One real defect", "#b06634"),
    3: ("3. Where it goes", "#2a7b6f"),
    4: ("4. Graft", "#a1309b"),
    5: ("5. Save", "#88A"),
}
NOTES = {
    1: (
        (
            "One-shot defect, no training\n\nAny SD1.5 checkpoint, no LoRA: the defect of one real photo is grafted "
            "into "
            "a normal photo by attention control (O2MAG). For a defect type you will make many of, a trained Dual LoRA "
            "gives more variety; this gives a first defect in minutes."
        ),
        (40, 300),
    ),
    2: (
        (
            "Reference\n\nLoad a real defect photo, right-click > Open in MaskEditor and paint the defect. The mask "
            "must "
            "cover the defect only; its size must match the photo (the editor does that)."
        ),
        (420, 500),
    ),
    3: (
        (
            "Target\n\nLoad the normal photo and paint where the defect should go, on the object. Batches work: each "
            "normal image gets the defect, with its own mask or one shared mask."
        ),
        (800, 500),
    ),
    4: (
        (
            "Settings\n\nO2MAG's defaults: 50 DDIM steps, cfg 7.5, 500 steps of prompt-embedding fitting at lr 0.003 "
            "(cached per reference, so the next image skips it). tighten: the mask keeps the target pixels whose "
            "colour "
            "changed by more than this (0 = the target mask itself)."
        ),
        (1180, 600),
    ),
}
HEIGHTS = {
    "CheckpointLoaderSimple": 100,
    "LoadImage": 320,
    "DualAnoDiffOneShotDefect": 500,
    "SaveImage": 270,
    "MaskToImage": 60,
    "Note": 200,
}


def main() -> None:
    layout.NAME, layout.SOCKETS, layout.GRAPH, layout.GROUPS, layout.NOTES = NAME, SOCKETS, GRAPH, GROUPS, NOTES
    layout.HEIGHTS = HEIGHTS
    layout.main()


if __name__ == "__main__":
    main()
