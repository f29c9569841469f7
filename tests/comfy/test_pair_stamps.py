"""Pairs are checked, not assumed: core nodes that break the [global, anomaly] rows are refused by name."""

from __future__ import annotations

import pytest
import test_modular
import torch
from test_modular import CFG, HW, NEG, POS_G, SEED, N, empty, ksampler, modular_inputs
from workflow_tools import run_node

classes, dual_model = test_modular.classes, test_modular.dual_model  # the same module-scoped fixtures

SPLIT_OR_PAIR = "before Pair Latent, or after Split Pairs"


def sampled_pairs(classes, dual_model):
    pairs, positive = modular_inputs(classes, empty())
    return ksampler(classes, dual_model, positive, pairs, steps=1), positive


def test_a_dual_model_without_pair_conditioning_names_it(classes, dual_model):
    pairs, _ = modular_inputs(classes, empty())
    with pytest.raises(
        ValueError, match="positive conditioning is not paired. Connect the sampler's positive to Pair Conditioning"
    ):
        ksampler(classes, dual_model, POS_G, pairs, steps=1)  # an even batch: the row parity alone would pass


def test_a_dual_model_without_pair_latent_names_it(classes, dual_model):
    _, positive = modular_inputs(classes, empty())
    photo = {"samples": torch.randn(2 * N, 4, *HW, generator=torch.Generator().manual_seed(3))}
    with pytest.raises(ValueError, match="latent did not come from Pair Latent.*Put Pair Latent right before"):
        ksampler(classes, dual_model, positive, photo, steps=1)
    ksampler(classes, dual_model, positive, run_node(classes["DualAnoDiffPairLatent"], latent=photo)[0], steps=1)


@pytest.mark.parametrize(
    "node, inputs",
    [
        ("LatentFlip", {"flip_method": "x-axis: vertically"}),
        ("LatentRotate", {"rotation": "90 degrees"}),
        ("LatentUpscale", {"upscale_method": "nearest-exact", "width": 128, "height": 128, "crop": "disabled"}),
    ],
)
def test_core_latent_ops_on_pairs_are_refused_everywhere(classes, dual_model, node, inputs):
    pairs, positive = sampled_pairs(classes, dual_model)
    (changed,) = run_node(classes[node], samples=pairs, **inputs)
    assert changed.get("anodiff_pairs")  # the core node copied the dict, entry included...
    for run in (
        lambda: run_node(classes["DualAnoDiffSplitPairs"], pairs=changed),
        lambda: run_node(classes["DualAnoDiffPairLatent"], latent=changed),
    ):
        with pytest.raises(ValueError, match=f"rows were changed after pairing by a core node.*{SPLIT_OR_PAIR}"):
            run()  # ...but not the stamp
    with pytest.raises(ValueError, match="rows were changed after it by a core node.*Put Pair Latent"):
        ksampler(classes, dual_model, positive, changed, steps=1)


def test_latent_composite_into_pairs_is_refused(classes, dual_model):
    pairs, positive = sampled_pairs(classes, dual_model)
    patch = {"samples": torch.ones(1, 4, 4, 4)}  # one photo patch, as into a plain batch
    (mixed,) = run_node(classes["LatentComposite"], samples_to=pairs, samples_from=patch, x=0, y=0, feather=0)
    with pytest.raises(ValueError, match="Split Pairs: the paired latent's rows were changed"):
        run_node(classes["DualAnoDiffSplitPairs"], pairs=mixed)
    with pytest.raises(ValueError, match="Pair Latent"):
        ksampler(classes, dual_model, positive, mixed, steps=1)


@pytest.mark.parametrize(
    "node, inputs",
    [("LatentFromBatch", {"batch_index": 1, "length": 2}), ("RepeatLatentBatch", {"amount": 2})],
)
def test_batch_changing_ops_get_their_own_message(classes, dual_model, node, inputs):
    pairs, _ = sampled_pairs(classes, dual_model)
    (changed,) = run_node(classes[node], samples=pairs, **inputs)
    for name, key in (("DualAnoDiffSplitPairs", "pairs"), ("DualAnoDiffPairLatent", "latent")):
        with pytest.raises(ValueError, match="rows where Pair Latent made 4; a core node changed its batch"):
            run_node(classes[name], **{key: changed})


def test_ops_applied_to_both_branches_then_paired_again_sample(classes, dual_model):
    pairs, positive = sampled_pairs(classes, dual_model)
    g, a = run_node(classes["DualAnoDiffSplitPairs"], pairs=pairs)
    (g_flip,) = run_node(classes["LatentFlip"], samples=g, flip_method="x-axis: vertically")
    (a_flip,) = run_node(classes["LatentFlip"], samples=a, flip_method="x-axis: vertically")
    (again,) = run_node(classes["DualAnoDiffPairLatent"], latent=g_flip, anomaly=a_flip)
    torch.testing.assert_close(again["samples"], pairs["samples"].flip(2), atol=0, rtol=0)  # both rows flipped
    refined = ksampler(classes, dual_model, positive, again, denoise=0.3, steps=2)
    g2, _ = run_node(classes["DualAnoDiffSplitPairs"], pairs=refined)
    assert g2["samples"].shape == (N, 4, *HW)
    with pytest.raises(ValueError, match="Pair Latent: 'anomaly' has shape"):
        run_node(classes["DualAnoDiffPairLatent"], latent=g, anomaly={"samples": a["samples"][:1]})
    with pytest.raises(ValueError, match="already paired; leave 'anomaly' unconnected"):
        run_node(classes["DualAnoDiffPairLatent"], latent=pairs, anomaly=a)


def test_conditioning_changed_after_pair_conditioning_is_refused(classes, dual_model):
    pairs, positive = modular_inputs(classes, empty())
    (averaged,) = run_node(
        classes["ConditioningAverage"], conditioning_to=positive, conditioning_from=POS_G, conditioning_to_strength=0.5
    )
    with pytest.raises(ValueError, match="positive conditioning was changed after Pair Conditioning by a core node"):
        ksampler(classes, dual_model, averaged, pairs, steps=1)
    (timed,) = run_node(classes["ConditioningSetTimestepRange"], conditioning=positive, start=0.0, end=1.0)
    ksampler(classes, dual_model, timed, pairs, steps=1)  # an option that leaves the prompts alone is fine


class FakeControl:
    """Stands in for a ControlNet: the guider asks it for hooks and models before the dual MODEL's check runs."""

    previous_controlnet = extra_hooks = None

    def __getattr__(self, name):
        return lambda *args, **kwargs: []


@pytest.mark.parametrize(
    "key, value, name",
    [
        ("gligen", ("position", object(), [(8, 8, 0, 0)]), "GLIGEN Textbox Apply"),
        ("control", FakeControl(), "Apply ControlNet"),
    ],
)
def test_hints_added_after_pair_conditioning_are_refused(classes, dual_model, key, value, name):
    """As GLIGENTextBoxApply / ControlNetApply set them: on a copy of the paired cond's options."""
    pairs, positive = modular_inputs(classes, empty())
    hinted = [[t, {**options, key: value}] for t, options in positive]
    with pytest.raises(ValueError, match=f"positive conditioning of a Dual LoRA MODEL carries .*remove {name}"):
        ksampler(classes, dual_model, hinted, pairs, steps=1)
    negative = [[t, {**options, key: value}] for t, options in NEG]
    with pytest.raises(ValueError, match=f"negative conditioning .*remove {name}"):
        run_node(
            classes["KSampler"],
            model=dual_model,
            seed=SEED,
            steps=1,
            cfg=CFG,
            sampler_name="euler",
            scheduler="normal",
            positive=positive,
            negative=negative,
            latent_image=pairs,
            denoise=1.0,
        )
