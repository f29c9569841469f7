"""``DualAnoDiffPipeline`` as a diffusers ``DiffusionPipeline``: registered components, ``from_pretrained`` /
``from_single_file`` / ``load_dual``, ``.to``, model offload, the progress bar, ``callback_on_step_end``, and the
one denoising loop it shares with the offline demo."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from test_pipeline import FAST, dual_file

from anodiff.sd15.load import load_sd15
from anodiff.sd15.pipeline import DualAnoDiffPipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")
COMPONENTS = {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}
COMFY_TESTS = Path(__file__).resolve().parent / "comfy"


@pytest.fixture(scope="module")
def dual(tmp_path_factory):
    return dual_file().save(tmp_path_factory.mktemp("dual") / "dual.safetensors")


@pytest.fixture(scope="module")
def pipe(sd_dir, dual):
    return DualAnoDiffPipeline.from_pretrained(sd_dir, dual=dual)


@pytest.fixture(scope="module")
def reference(sd_dir, dual):
    """What the pipeline built from an ``SD15`` draws: the numbers every other constructor must reproduce."""
    from anodiff.weights.load import load_dual

    return DualAnoDiffPipeline.from_sd15(load_sd15(sd_dir), load_dual(dual))(2, seed=3, **FAST)


def same(a, b) -> bool:
    return np.array_equal(a.images, b.images) and np.array_equal(a.anomaly_parts, b.anomaly_parts)


def test_a_diffusion_pipeline_with_the_five_sd15_components(pipe):
    from diffusers import DiffusionPipeline

    assert isinstance(pipe, DiffusionPipeline)
    assert set(pipe.components) == COMPONENTS
    assert {k for k, v in pipe.config.items() if not k.startswith("_")} == COMPONENTS
    assert pipe.config["unet"] == ("diffusers", "UNet2DConditionModel") and pipe.unet is pipe.model.unet
    assert pipe.adapter is pipe.model.adapter and pipe.base.unet is pipe.unet
    assert pipe.model_cpu_offload_seq == "text_encoder->unet->vae"


def test_from_pretrained_and_load_dual_draw_what_from_sd15_draws(sd_dir, dual, pipe, reference):
    assert same(pipe(2, seed=3, **FAST), reference)
    later = DualAnoDiffPipeline.from_pretrained(sd_dir)
    with pytest.raises(ValueError, match=r"call pipe.load_dual\(path\) first"):
        later(1, **FAST)
    assert later.load_dual(dual) is later and same(later(2, seed=3, **FAST), reference)
    with pytest.raises(ValueError, match="already serves a DualAnoDiff pipeline"):
        later.load_dual(dual)
    with pytest.raises(ValueError, match="use DualAnoDiffPipeline.from_single_file"):
        DualAnoDiffPipeline.from_pretrained(dual)


def _comfy_single_file_helpers():
    """``ldm_checkpoint`` (ComfyUI's key maps write the LDM layout) from ``tests/comfy``; skipped without ComfyUI."""

    def load(name: str, path: Path):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    tiny = load("anodiff_tests_comfy_tiny", COMFY_TESTS / "tiny.py")
    try:
        tiny.init_comfy(cpu=True)
        import comfy.diffusers_convert
        import comfy.utils  # noqa: F401
    except (tiny.ComfyUINotFoundError, ImportError) as err:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the single-file test: {err}", pytrace=False)
        pytest.skip(f"writing an LDM checkpoint needs ComfyUI's key maps: {err}")
    return load("anodiff_tests_comfy_single_file", COMFY_TESTS / "test_single_file.py")


def test_from_single_file_draws_what_the_folder_draws(sd_dir, dual, reference, tmp_path):
    helpers = _comfy_single_file_helpers()
    checkpoint = helpers.ldm_checkpoint(load_sd15(sd_dir), tmp_path / "tiny.safetensors")
    pipe = DualAnoDiffPipeline.from_single_file(checkpoint, dual=dual, config=sd_dir)
    got = pipe(2, seed=3, **FAST)
    np.testing.assert_allclose(got.images, reference.images, atol=1e-4)
    np.testing.assert_allclose(got.anomaly_parts, reference.anomaly_parts, atol=1e-4)
    with pytest.raises(ValueError, match="use DualAnoDiffPipeline.from_pretrained"):
        DualAnoDiffPipeline.from_single_file(sd_dir)


def test_callback_on_step_end_runs_every_step_and_may_replace_the_latents(pipe, reference):
    seen = []

    def keep(p, step, timestep, kwargs):
        assert p is pipe and set(kwargs) == {"latents"} and kwargs["latents"].shape == (4, 4, 16, 16)
        seen.append((step, int(timestep)))
        return kwargs

    assert same(pipe(2, seed=3, callback_on_step_end=keep, **FAST), reference)
    assert [s for s, _ in seen] == list(range(FAST["steps"])) and seen[0][1] > seen[-1][1]

    def zero(p, step, timestep, kwargs):
        return {"latents": torch.zeros_like(kwargs["latents"])} if step == FAST["steps"] - 1 else {}

    flat = pipe(2, seed=3, callback_on_step_end=zero, **FAST)
    assert not same(flat, reference)
    np.testing.assert_allclose(flat.images, flat.images[:1].repeat(2, axis=0))  # zero latents: one image
    with pytest.raises(ValueError, match="'noise' is not one of"):
        pipe(1, callback_on_step_end=keep, callback_on_step_end_tensor_inputs=["noise"], **FAST)


def test_set_progress_bar_config_silences_the_bar(pipe, capsys):
    kw = {**FAST, "progress": True}
    pipe(1, **kw)
    assert "denoising" in capsys.readouterr().err
    pipe.set_progress_bar_config(disable=True)
    try:
        pipe(1, **kw)
        assert capsys.readouterr().err == ""
    finally:
        pipe.set_progress_bar_config(desc="denoising", leave=False)


def test_to_moves_every_module_the_adapter_too_and_keeps_the_vae_in_fp32(sd_dir, dual, reference):
    pipe = DualAnoDiffPipeline.from_pretrained(sd_dir, dual=dual).to(torch.float64)
    for module in (pipe.unet, pipe.text_encoder, pipe.vae, pipe.adapter):
        assert {p.dtype for p in module.parameters()} == {torch.float64}
    assert pipe.dtype == torch.float64
    np.testing.assert_allclose(pipe(2, seed=3, **FAST).images, reference.images, atol=1e-4)
    pipe.to(torch.bfloat16)
    assert pipe.unet.dtype == torch.bfloat16 and {p.dtype for p in pipe.adapter.parameters()} == {torch.bfloat16}
    assert pipe.vae.dtype == torch.float32  # SD1.5's VAE overflows in half
    pipe.to("meta")
    assert {p.device.type for m in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.adapter) for p in m.parameters()} == {
        "meta"
    }


def test_model_cpu_offload_installs_hooks_and_samples_the_same(sd_dir, dual, reference):
    """Without an accelerator the execution device is the CPU itself: this checks the hooks and the bookkeeping
    (which module is hooked, where the adapter and the latents go, hooks re-armed after a call), not the savings."""
    pipe = DualAnoDiffPipeline.from_pretrained(sd_dir, dual=dual)
    pipe.enable_model_cpu_offload(device="cpu")
    for name in ("text_encoder", "unet", "vae"):
        assert hasattr(getattr(pipe, name), "_hf_hook"), name
    assert not hasattr(pipe.adapter, "_hf_hook") and pipe._execution_device == torch.device("cpu", 0)
    assert same(pipe(2, seed=3, **FAST), reference)
    assert len(pipe._all_hooks) == 3 and hasattr(pipe.unet, "_hf_hook")  # maybe_free_model_hooks re-armed them
    pipe.remove_all_hooks()
    assert not hasattr(pipe.unet, "_hf_hook")


def test_the_pipeline_and_the_demo_run_the_same_loop(pipe, monkeypatch):
    import anodiff.demo.train
    import anodiff.sd15.pipeline
    from anodiff.demo.model import PairUNet
    from anodiff.sd15 import sampling

    calls = []

    def spy(denoiser, scheduler, latents, *args, **kwargs):
        calls.append(type(scheduler).__name__)
        return sampling.denoise(denoiser, scheduler, latents, *args, **kwargs)

    assert anodiff.sd15.pipeline.denoise is sampling.denoise is anodiff.demo.train.denoise
    monkeypatch.setattr(anodiff.sd15.pipeline, "denoise", spy)
    monkeypatch.setattr(anodiff.demo.train, "denoise", spy)
    pipe(1, **FAST)
    glob, part = anodiff.demo.train.ddim_sample(PairUNet().eval(), 1, 8, steps=2)
    assert calls == ["DDIMScheduler", "CosineDDIM"] and glob.shape == part.shape == (1, 8, 8, 3)
