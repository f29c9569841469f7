"""Pairing for every latent source: noise per branch, per-prompt conditioning options, refused hints, BCM seed/fit."""

from __future__ import annotations

import pytest
import torch
from dual_files import CONTEXT
from pack import import_pack
from tiny import build_tiny_model, encode_prompt
from workflow_tools import node_classes, run_node


@pytest.fixture(scope="module")
def pack_nodes(comfyui_root):
    return import_pack().nodes


@pytest.fixture(scope="module")
def classes(pack_nodes):
    return node_classes(pack_nodes)[0]


def cond(seed: int, **options) -> list:
    return [[torch.randn(1, 77, CONTEXT, generator=torch.Generator().manual_seed(seed)), options]]


def test_batch_index_gives_every_row_its_own_noise(pack_nodes, classes):
    import comfy.sample
    from dualanodiff_pack.nodes.sampling.pairing import pair_latent

    samples = torch.zeros(3, 4, 8, 8)
    (repeated,) = run_node(classes["RepeatLatentBatch"], samples={"samples": samples[:1], "batch_index": [4]}, amount=3)
    for latent in (
        {"samples": samples},
        {"samples": samples, "batch_index": [0, 1, 2]},
        repeated,
        {"samples": samples, "batch_index": [2, 2, 7]},
    ):
        paired = pair_latent(latent)
        noise = comfy.sample.prepare_noise(paired["samples"], 9, paired.get("batch_index"))
        flat = noise.flatten(1)
        distinct = torch.cdist(flat, flat) + torch.eye(6) * 1e9
        g_rows, a_rows = noise[0::2], noise[1::2]
        assert not torch.equal(g_rows[0], a_rows[0])
        if len(set(latent.get("batch_index") or range(3))) == 3:
            assert distinct.min() > 1.0  # all six rows differ
    plain = pair_latent({"samples": samples})
    indexed = pair_latent({"samples": samples, "batch_index": [0, 1, 2]})
    assert indexed["batch_index"] == [0, 1, 2, 3, 4, 5]
    torch.testing.assert_close(
        comfy.sample.prepare_noise(indexed["samples"], 9, indexed["batch_index"]),
        comfy.sample.prepare_noise(plain["samples"], 9),
        atol=0,
        rtol=0,
    )


def test_dual_sampler_with_batch_index_samples_independent_branches(classes, tmp_path):
    model = build_tiny_model()
    seen = []
    probe = model.clone()
    probe.set_model_attn1_output_patch(lambda n, extra: seen.append(n.shape[0]) or n)  # a pass-through
    latent = {"samples": torch.zeros(2, 4, 8, 8), "batch_index": [5, 9]}
    g, a, pairs = run_node(
        classes["DualAnoDiffSampler"],
        model=probe,
        positive_global=cond(1),
        positive_anomaly=cond(1),
        negative=cond(3),
        latent_image=latent,
        seed=4,
        steps=2,
        cfg=1.0,
        sampler_name="euler",
        scheduler="normal",
        denoise=1.0,
    )
    assert seen and set(seen) == {4}
    # same model, same prompt on both branches: only the noise tells the rows apart
    assert (g["samples"] - a["samples"]).abs().max() > 1e-2
    assert g["batch_index"] == [5, 9] and pairs["batch_index"] == [10, 11, 18, 19]


def test_conditioning_options_of_both_prompts_are_kept(pack_nodes, tiny_sd15):
    from dualanodiff_pack.nodes.sampling.pairing import pair_conditioning

    _, clip, _ = tiny_sd15
    g, a = encode_prompt(clip, "a vfx with sks"), encode_prompt(clip, "sks")
    ((tokens, options),) = pair_conditioning(g, a)
    assert tokens.shape[0] == 2
    assert torch.equal(options["pooled_output"], torch.cat([g[0][1]["pooled_output"], a[0][1]["pooled_output"]]))
    extra_g = cond(1, extra=torch.ones(1, 3), shared="x", area=(8, 8, 0, 0))
    extra_a = cond(2, extra=torch.zeros(1, 3), shared="x", area=(8, 8, 0, 0))
    ((_, merged),) = pair_conditioning(extra_g, extra_a)
    assert torch.equal(merged["extra"], torch.tensor([[1.0] * 3, [0.0] * 3]))
    assert merged["shared"] == "x" and merged["area"] == (8, 8, 0, 0)
    with pytest.raises(ValueError, match="differ in their conditioning option 'area'"):
        pair_conditioning(cond(1, area=(8, 8, 0, 0)), cond(2))
    with pytest.raises(ValueError, match="'strength'"):
        pair_conditioning(cond(1, strength=0.5), cond(2, strength=1.0))


@pytest.mark.parametrize("key", ["control", "gligen"])
def test_controlnet_and_gligen_are_refused_with_a_clear_message(classes, key):
    model = build_tiny_model()
    hinted = cond(1, **{key: object()})
    args = {
        "model": model,
        "latent_image": {"samples": torch.zeros(1, 4, 8, 8)},
        "seed": 0,
        "steps": 1,
        "cfg": 2.0,
        "sampler_name": "euler",
        "scheduler": "normal",
        "denoise": 1.0,
    }
    for pg, pa, neg, where in (
        (hinted, cond(2), cond(3), "positive_global"),
        (cond(1), hinted, cond(3), "positive_anomaly"),
        (cond(1), cond(2), hinted, "negative"),
    ):
        with pytest.raises(ValueError, match=f"{where} carries .*not support"):
            run_node(classes["DualAnoDiffSampler"], positive_global=pg, positive_anomaly=pa, negative=neg, **args)
    with pytest.raises(ValueError, match="positive_global carries"):
        run_node(classes["DualAnoDiffPairConditioning"], positive_global=hinted, positive_anomaly=cond(2))


def test_control_residuals_reaching_a_dual_model_are_refused(pack_nodes, tmp_path):
    """The modular path cannot see a ControlNet applied after Pair Conditioning; the model wrapper refuses it."""
    from dualanodiff_pack.nodes.model.patch import DualPatch

    from anodiff import DualAdapter, DualConfig

    patch = DualPatch(DualAdapter(DualConfig(rank=2), (32, 64, 128, 128), CONTEXT), (1.0, 1.0))

    class Executor:
        class_obj = None

        def __call__(self, *args, **kwargs):
            raise AssertionError("must not run")

    x = torch.zeros(2, 4, 8, 8)
    with pytest.raises(ValueError, match="ControlNet or T2I-Adapter"):
        patch.diffusion_model_wrapper(Executor(), x, torch.zeros(2), None, None, {"input": [x]}, {})


def test_bcm_noise_follows_the_sampler_seed(pack_nodes):
    import comfy.sample
    from dualanodiff_pack.nodes.model.bcm_patch import SEED, noise_seed, outer_sample_wrapper

    model = build_tiny_model().clone()
    seen = []
    model.add_wrapper_with_key("outer_sample", "test", outer_sample_wrapper)
    model.set_model_attn1_output_patch(lambda n, extra: seen.append(extra.get(SEED)) or n)
    for seed in (123, 2**64 - 1):
        seen.clear()
        noise = comfy.sample.prepare_noise(torch.zeros(2, 4, 8, 8), seed)
        comfy.sample.sample(
            model, noise, 1, 1.0, "euler", "normal", cond(1), cond(2), torch.zeros(2, 4, 8, 8), seed=seed
        )
        assert seen and set(seen) == {seed}
    assert SEED not in model.model_options["transformer_options"]  # set on the run's copy only
    t = torch.tensor([3.5])
    assert noise_seed({SEED: 1}, t) != noise_seed({SEED: 2}, t) and noise_seed({}, t) == 35000
    assert noise_seed({SEED: 2**64 - 1}, t) == 34999


def test_background_of_another_size_is_cropped_not_stretched(pack_nodes):
    from dualanodiff_pack.nodes.model.bcm_patch import fit_latent

    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(16.0), indexing="ij")
    wide = torch.stack([ys, xs, ys + xs, ys - xs])[None]  # (1, 4, 8, 16): values say where they came from
    torch.testing.assert_close(fit_latent(wide, (8, 8)), wide[..., 4:12])  # centre crop, no resampling
    tall = fit_latent(wide, (16, 16))  # scaled 2x to cover 16x32, then cropped: aspect kept
    assert tall.shape[-2:] == (16, 16)
    step_y = (tall[0, 0, 1:, 0] - tall[0, 0, :-1, 0]).mean()
    step_x = (tall[0, 1, 0, 1:] - tall[0, 1, 0, :-1]).mean()
    torch.testing.assert_close(step_y, step_x, atol=0.05, rtol=0)  # same scale along both axes
    assert fit_latent(wide, (8, 16)) is wide


def test_a_noise_mask_batch_is_tiled_by_pair(pack_nodes):
    from dualanodiff_pack.nodes.sampling.pairing import pair_latent

    masks = torch.stack([torch.full((8, 8), float(i)) for i in range(2)])  # 2 masks for 4 latents: i % 2, as ComfyUI
    paired = pair_latent({"samples": torch.zeros(4, 4, 8, 8), "noise_mask": masks})
    assert paired["noise_mask"][:, 0, 0].tolist() == [0, 0, 1, 1, 0, 0, 1, 1]  # both rows of pair i: mask i % 2
    one = torch.ones(1, 8, 8)
    assert pair_latent({"samples": torch.zeros(4, 4, 8, 8), "noise_mask": one})["noise_mask"] is one
