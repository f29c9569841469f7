"""One-Shot Defect (graft) node on a tiny SD1.5-layout ComfyUI model: output, the MODEL left unpatched,
interrupt, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pack import PACK_NAME, import_pack

S = 64


@pytest.fixture(scope="module")
def node_class(comfyui_root):
    import importlib

    import_pack()
    return importlib.import_module(f"{PACK_NAME}.nodes.graft.graft").DualAnoDiffOneShotDefect


def _inputs():
    g = np.random.default_rng(0)
    normal = np.clip(0.5 + g.normal(0, 0.05, (1, S, S, 3)), 0, 1).astype(np.float32)
    reference = normal.copy()
    reference[0, 16:40, 20:44] = 0.05
    ref_mask = np.zeros((1, S, S), np.float32)
    ref_mask[0, 16:40, 20:44] = 1
    target = np.zeros((1, S, S), np.float32)
    target[0, 8:32, 8:32] = 1
    return [torch.from_numpy(a) for a in (reference, ref_mask, normal, target)]


def _run(node, model, clip, vae, reference, ref_mask, normal, target, **kw):
    values = {
        "category": "tile",
        "defect": "hole",
        "steps": 3,
        "cfg": 7.5,
        "optimise_steps": 2,
        "optimise_lr": 0.003,
        "seed": 0,
        "tighten": 8 / 255,
        "feather": 2,
        **kw,
    }
    return node.graft(model, clip, vae, reference, ref_mask, normal, target, **values)


def _patches(model) -> dict:
    return {
        k: dict(v) for k, v in model.model_options.get("transformer_options", {}).get("patches_replace", {}).items()
    }


def test_one_shot_node_grafts_inside_the_target_and_leaves_the_model(tiny_sd15, node_class):
    from anodiff.regions.stitch import grown_region

    model, clip, vae = tiny_sd15
    before = _patches(model)
    reference, ref_mask, normal, target = _inputs()
    image, mask = _run(node_class(), model, clip, vae, reference, ref_mask, normal, target)
    assert image.shape == (1, S, S, 3) and mask.shape == (1, S, S)
    far = ~grown_region(target[0].numpy(), 2)
    np.testing.assert_array_equal(image[0].numpy()[far], normal[0].numpy()[far])
    inside = target[0].numpy() > 0.5
    assert np.abs(image[0].numpy() - normal[0].numpy())[inside].max() > 0.01
    assert not (mask[0].numpy() > 0.5)[~inside].any()
    assert _patches(model) == before  # the MODEL given is never patched
    _, untightened = _run(node_class(), model, clip, vae, reference, ref_mask, normal, target, tighten=0.0)
    np.testing.assert_array_equal(untightened[0].numpy(), target[0].numpy())


def test_interrupt_stops_it_and_leaves_the_model(tiny_sd15, node_class):
    import comfy.model_management as mm

    model, clip, vae = tiny_sd15
    before = _patches(model)
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            _run(node_class(), model, clip, vae, *_inputs())
    finally:
        mm.interrupt_current_processing(False)
    assert _patches(model) == before


@pytest.mark.parametrize(
    ("which", "value", "message"),
    [(1, torch.zeros(1, S, S), "reference mask is empty"), (3, torch.ones(1, S, S + 8), "target mask is 72x64")],
)
def test_bad_masks_are_named(tiny_sd15, node_class, which, value, message):
    model, clip, vae = tiny_sd15
    args = _inputs()
    args[which] = value
    with pytest.raises(ValueError, match=message):
        _run(node_class(), model, clip, vae, *args)


def test_every_input_has_a_tooltip(node_class):
    spec = node_class.INPUT_TYPES()
    for group in spec.values():
        for name, (_, options) in group.items():
            assert options.get("tooltip"), name
