"""The modular path: Pair Latent + Pair Conditioning -> any ComfyUI sampler -> Split Pairs, against the Dual Sampler."""

from __future__ import annotations

import pytest
import torch
from dual_files import CONTEXT, write_dual_weights
from pack import import_pack
from tiny import build_tiny_model
from workflow_tools import node_classes, run_node

N, HW, STEPS, CFG, SEED = 2, (8, 8), 4, 2.0, 11


def cond(seed: int) -> list:
    return [[torch.randn(1, 77, CONTEXT, generator=torch.Generator().manual_seed(seed)), {}]]


POS_G, POS_A, NEG = cond(1), cond(2), cond(3)


@pytest.fixture(scope="module")
def classes(comfyui_root):
    return node_classes(import_pack().nodes)[0]


@pytest.fixture(scope="module")
def dual_model(comfyui_root, tmp_path_factory, classes):
    import folder_paths

    folder = tmp_path_factory.mktemp("dual")
    write_dual_weights(folder / "dual.safetensors")
    saved = folder_paths.folder_names_and_paths.get("dualanodiff")
    folder_paths.folder_names_and_paths["dualanodiff"] = ([str(folder)], {".safetensors"})
    getattr(folder_paths, "filename_list_cache", {}).clear()
    try:
        model, _ = run_node(
            classes["DualAnoDiffLoadLoRA"],
            model=build_tiny_model(),
            clip=None,
            lora_name="dual.safetensors",
            strength_global=1.0,
            strength_anomaly=1.0,
            strength_clip=1.0,
        )
    finally:
        if saved is not None:
            folder_paths.folder_names_and_paths["dualanodiff"] = saved
    return model


def empty(n=N):
    return {"samples": torch.zeros(n, 4, *HW)}


def dual_sampler(classes, model, latent, steps=STEPS, denoise=1.0, seed=SEED):
    return run_node(
        classes["DualAnoDiffSampler"],
        model=model,
        positive_global=POS_G,
        positive_anomaly=POS_A,
        negative=NEG,
        latent_image=latent,
        seed=seed,
        steps=steps,
        cfg=CFG,
        sampler_name="euler",
        scheduler="normal",
        denoise=denoise,
    )


def modular_inputs(classes, latent):
    (pairs,) = run_node(classes["DualAnoDiffPairLatent"], latent=latent)
    (positive,) = run_node(classes["DualAnoDiffPairConditioning"], positive_global=POS_G, positive_anomaly=POS_A)
    return pairs, positive


def ksampler(classes, model, positive, latent, denoise=1.0, steps=STEPS):
    return run_node(
        classes["KSampler"],
        model=model,
        seed=SEED,
        steps=steps,
        cfg=CFG,
        sampler_name="euler",
        scheduler="normal",
        positive=positive,
        negative=NEG,
        latent_image=latent,
        denoise=denoise,
    )[0]


def test_ksampler_with_pair_nodes_equals_the_dual_sampler(classes, dual_model):
    g, a, pairs_out = dual_sampler(classes, dual_model, empty())
    pairs, positive = modular_inputs(classes, empty())
    assert pairs["samples"].shape == (2 * N, 4, *HW)
    sampled = ksampler(classes, dual_model, positive, pairs)
    g2, a2 = run_node(classes["DualAnoDiffSplitPairs"], pairs=sampled)
    torch.testing.assert_close(g2["samples"], g["samples"], atol=0, rtol=0)
    torch.testing.assert_close(a2["samples"], a["samples"], atol=0, rtol=0)
    torch.testing.assert_close(sampled["samples"], pairs_out["samples"], atol=0, rtol=0)
    assert not torch.allclose(g["samples"], a["samples"])


def test_ksampler_advanced_start_end_steps_on_pairs(classes, dual_model):
    pairs, positive = modular_inputs(classes, empty())
    full = ksampler(classes, dual_model, positive, pairs)
    common = {
        "model": dual_model,
        "noise_seed": SEED,
        "steps": STEPS,
        "cfg": CFG,
        "sampler_name": "euler",
        "scheduler": "normal",
        "positive": positive,
        "negative": NEG,
    }
    (first,) = run_node(
        classes["KSamplerAdvanced"],
        add_noise="enable",
        latent_image=pairs,
        start_at_step=0,
        end_at_step=2,
        return_with_leftover_noise="enable",
        **common,
    )
    assert first.get("anodiff_pairs") and first["samples"].shape == (2 * N, 4, *HW)
    (second,) = run_node(
        classes["KSamplerAdvanced"],
        add_noise="disable",
        latent_image=first,
        start_at_step=2,
        end_at_step=10000,
        return_with_leftover_noise="disable",
        **common,
    )
    torch.testing.assert_close(second["samples"], full["samples"], atol=1e-4, rtol=1e-4)
    assert (first["samples"] - full["samples"]).abs().max() > 1e-2  # the first half really stopped early


def test_sampler_custom_advanced_with_guider_and_custom_sigmas(classes, dual_model):
    pairs, positive = modular_inputs(classes, empty())
    full = ksampler(classes, dual_model, positive, pairs)
    (noise,) = run_node(classes["RandomNoise"], noise_seed=SEED)
    (guider,) = run_node(classes["CFGGuider"], model=dual_model, positive=positive, negative=NEG, cfg=CFG)
    (sampler,) = run_node(classes["KSamplerSelect"], sampler_name="euler")
    (sigmas,) = run_node(classes["BasicScheduler"], model=dual_model, scheduler="normal", steps=STEPS, denoise=1.0)
    out, _ = run_node(
        classes["SamplerCustomAdvanced"], noise=noise, guider=guider, sampler=sampler, sigmas=sigmas, latent_image=pairs
    )
    torch.testing.assert_close(out["samples"], full["samples"], atol=1e-5, rtol=1e-5)
    custom = torch.tensor([float(sigmas[0]), 3.0, 1.0, 0.0])  # hand-written sigmas
    other, _ = run_node(
        classes["SamplerCustomAdvanced"], noise=noise, guider=guider, sampler=sampler, sigmas=custom, latent_image=pairs
    )
    g, a = run_node(classes["DualAnoDiffSplitPairs"], pairs=other)
    assert g["samples"].shape == a["samples"].shape == (N, 4, *HW)
    assert torch.isfinite(other["samples"]).all() and (other["samples"] - out["samples"]).abs().max() > 1e-3
    # another guider: BasicGuider (no CFG) equals KSampler at cfg 1
    (basic,) = run_node(classes["BasicGuider"], model=dual_model, conditioning=positive)
    no_cfg, _ = run_node(
        classes["SamplerCustomAdvanced"], noise=noise, guider=basic, sampler=sampler, sigmas=sigmas, latent_image=pairs
    )
    (want,) = run_node(
        classes["KSampler"],
        model=dual_model,
        seed=SEED,
        steps=STEPS,
        cfg=1.0,
        sampler_name="euler",
        scheduler="normal",
        positive=positive,
        negative=NEG,
        latent_image=pairs,
        denoise=1.0,
    )
    torch.testing.assert_close(no_cfg["samples"], want["samples"], atol=1e-5, rtol=1e-5)


def test_second_pass_keeps_the_anomaly_rows(classes, dual_model):
    g, a, pairs = dual_sampler(classes, dual_model, empty())
    assert set(g) == {"samples"} and set(a) == {"samples"}  # plain outputs: no hidden rows a core node would copy
    # refine through the Dual Sampler's pairs output, and through KSampler on the pairs output
    g2, a2, _ = dual_sampler(classes, dual_model, pairs, steps=STEPS, denoise=0.4, seed=SEED + 1)
    pairs_again, positive = modular_inputs(classes, pairs)
    assert pairs_again["samples"].data_ptr() == pairs["samples"].data_ptr()  # already paired: unchanged
    refined = ksampler(classes, dual_model, positive, pairs_again, denoise=0.4)
    for anomaly, start in ((a2, a), (run_node(classes["DualAnoDiffSplitPairs"], pairs=refined)[1], a)):
        # the anomaly branch was refined from the anomaly latent, not from the global one
        assert (anomaly["samples"] - start["samples"]).abs().mean() < (anomaly["samples"] - g["samples"]).abs().mean()
    assert (g2["samples"] - g["samples"]).abs().max() > 1e-3


def test_pair_nodes_have_tooltips(classes):
    for name in ("DualAnoDiffPairLatent", "DualAnoDiffPairConditioning", "DualAnoDiffSplitPairs"):
        cls = classes[name]
        assert cls.DESCRIPTION and len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES)
        for section in cls.INPUT_TYPES().values():
            assert all(opts.get("tooltip") for _, opts in section.values())


def test_an_odd_batch_on_a_dual_model_names_the_pair_nodes(classes, dual_model):
    with pytest.raises(ValueError, match="carries a Dual LoRA.*positive conditioning is not paired.*Pair Conditioning"):
        ksampler(classes, dual_model, POS_G, empty(1), steps=1)  # a plain KSampler on one latent: no pairs
