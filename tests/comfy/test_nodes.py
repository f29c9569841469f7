"""The four DualAnoDiff nodes in-process on a tiny SD1.5-layout ComfyUI model."""

from __future__ import annotations

import copy

import pytest
import torch
from dual_files import CHANNELS, CONTEXT, write_dual_weights
from pack import import_pack
from tiny import TINY_UNET_CONFIG, build_tiny_model

from anodiff import DualAdapter, DualConfig, interleave, to_dual_file
from anodiff.sd15.processor import DualUNet, UNetPass


def make_weights(folder, name="dual.safetensors", bcm=False, zero=False, seed=3, text=None):
    return write_dual_weights(folder / name, bcm=bcm, zero=zero, seed=seed, text=text)


@pytest.fixture
def models_dir(tmp_path, comfyui_root, monkeypatch):
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "dualanodiff", ([str(tmp_path)], {".safetensors", ".bin"}))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {}, raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def nodes(comfyui_root):
    return import_pack().nodes


def cond(seed, tokens=77):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, CONTEXT, generator=g), {}]]


POS_G, POS_A, NEG = cond(1), cond(2), cond(3)


def load(nodes, model, name="dual.safetensors", saim=True, strengths=(1.0, 1.0)):
    loader = nodes.NODE_CLASS_MAPPINGS["DualAnoDiffLoadLoRA"]()
    patched, _ = loader.load(model, None, name, strengths[0], strengths[1], 1.0, saim=saim)
    return patched


def sample(nodes, model, n=2, hw=(8, 8), cfg=2.0, steps=3, seed=42, sampler="euler", scheduler="normal"):
    latent = {"samples": torch.zeros(n, 4, *hw)}
    node = nodes.NODE_CLASS_MAPPINGS["DualAnoDiffSampler"]()
    g, a, _ = node.sample(model, POS_G, POS_A, NEG, latent, seed, steps, cfg, sampler, scheduler, 1.0)
    return g["samples"], a["samples"]


def diffusers_twin(model):
    """A diffusers UNet with the ComfyUI tiny model's weights (ldm -> diffusers key map from comfy.utils)."""
    import comfy.utils
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=CHANNELS,
        layers_per_block=2,
        cross_attention_dim=CONTEXT,
        attention_head_dim=8,
        norm_num_groups=32,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    )
    mapping = comfy.utils.unet_to_diffusers(dict(TINY_UNET_CONFIG, num_heads=8, num_head_channels=-1))
    ldm = model.model.diffusion_model.state_dict()
    unet.load_state_dict({k: ldm[v] for k, v in mapping.items() if v in ldm}, strict=True)
    return unet.eval().requires_grad_(False)


def reference_euler(model, adapter, n, steps, cfg, seed, hw=(8, 8), background=None):
    """The anodiff diffusers path, stepped with ComfyUI's sigmas and noise (Euler, CFG, [uncond; cond]).

    background: (bg latent, grey latent) for BCM; the noise per step is drawn as the node's patch draws it
    (from the sampler's seed plus the step's sigma).
    """
    import comfy.sample
    import comfy.samplers

    sampling = model.get_model_object("model_sampling")
    sigmas = comfy.samplers.calculate_sigmas(sampling, "normal", steps)
    noise = comfy.sample.prepare_noise(torch.zeros(2 * n, 4, *hw), seed)
    dual = DualUNet(diffusers_twin(model), adapter)
    ctx = torch.cat([NEG[0][0].expand(2 * n, -1, -1), interleave(POS_G[0][0], POS_A[0][0]).repeat(n, 1, 1)])
    x = noise * torch.sqrt(1 + sigmas[0] ** 2)
    with torch.no_grad():
        for i in range(steps):
            sigma = sigmas[i]
            xin = x / torch.sqrt(sigma**2 + 1)
            t = sampling.timestep(sigma).float().expand(4 * n)
            extra = {}
            if background is not None:
                bg, grey = background
                rows = torch.cat([grey.expand(n, -1, -1, -1), bg.expand(n, -1, -1, -1)])
                g = torch.Generator().manual_seed(seed + int(float(sigma) * 1e4))
                noisy = rows + sigma * torch.randn(rows.shape, generator=g)
                extra = {"background": noisy / torch.sqrt(sigma**2 + 1), "background_timestep": t[: 2 * n]}
            eps = dual(torch.cat([xin, xin]), t, ctx, unet_pass=UNetPass(chunks=2), **extra)
            uncond, cond_eps = eps.chunk(2)
            x = x + (uncond + cfg * (cond_eps - uncond)) * (sigmas[i + 1] - sigma)
    return x


def model_space(model, g, a):
    """Sampler output back in the space the sampler works in (ComfyUI divides by the VAE scale factor at the end)."""
    return torch.stack([g, a], 1).flatten(0, 1) * model.model.latent_format.scale_factor


def leftover_overrides(model):
    return [n for n, m in model.model.diffusion_model.named_modules() if "forward" in m.__dict__]


def test_nodes_registered_with_tooltips(nodes):
    assert {"DualAnoDiffLoadLoRA", "DualAnoDiffSampler", "DualAnoDiffBackgroundCompensation"} <= set(
        nodes.NODE_CLASS_MAPPINGS
    )
    for name, cls in nodes.NODE_CLASS_MAPPINGS.items():
        assert name in nodes.NODE_DISPLAY_NAME_MAPPINGS
        assert cls.CATEGORY.startswith("DualAnoDiff") and cls.DESCRIPTION
        for section in cls.INPUT_TYPES().values():
            for key, (_, opts) in section.items():
                assert opts.get("tooltip"), f"{name}.{key} has no tooltip"


def test_dual_sampler_matches_anodiff_diffusers_path(nodes, models_dir):
    model = build_tiny_model()
    adapter = make_weights(models_dir)
    g, a = sample(nodes, load(nodes, model), n=2, steps=3, cfg=2.0)
    ref = reference_euler(model, adapter, n=2, steps=3, cfg=2.0, seed=42)
    torch.testing.assert_close(model_space(model, g, a), ref, atol=1e-4, rtol=1e-4)
    assert not leftover_overrides(model)


def test_saim_on_off_and_zero_lora_equals_plain_ksampler(nodes, models_dir):
    import comfy.sample
    from dualanodiff_pack.nodes.sampling.sampler import pair_conditioning

    model = build_tiny_model()
    make_weights(models_dir)
    make_weights(models_dir, "zero.safetensors", zero=True)
    on = sample(nodes, load(nodes, model))
    off = sample(nodes, load(nodes, model, saim=False))
    assert (on[0] - off[0]).abs().max() > 1e-3
    zero_off = torch.stack(sample(nodes, load(nodes, model, "zero.safetensors", saim=False)), 1).flatten(0, 1)
    noise = comfy.sample.prepare_noise(torch.zeros(4, 4, 8, 8), 42)
    plain = comfy.sample.sample(
        model, noise, 3, 2.0, "euler", "normal", pair_conditioning(POS_G, POS_A), NEG, torch.zeros(4, 4, 8, 8)
    )
    torch.testing.assert_close(zero_off, plain, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("n", "hw", "cfg"), [(1, (8, 8), 2.0), (3, (8, 16), 2.0), (2, (8, 8), 1.0)])
def test_batch_sizes_non_square_and_cfg1(nodes, models_dir, n, hw, cfg):
    model = build_tiny_model()
    make_weights(models_dir)
    g, a = sample(nodes, load(nodes, model), n=n, hw=hw, cfg=cfg)
    assert g.shape == a.shape == (n, 4, *hw)
    assert torch.isfinite(g).all() and not torch.allclose(g, a)
    if cfg == 1.0:  # uncond dropped: only the cond chunk runs; must equal the explicit reference
        ref = reference_euler(model, make_weights(models_dir), n=n, steps=3, cfg=1.0, seed=42, hw=hw)
        torch.testing.assert_close(model_space(model, g, a), ref, atol=1e-4, rtol=1e-4)


def test_forced_cond_uncond_split_gives_the_same_result(nodes, models_dir, monkeypatch):
    import comfy.model_management

    model = build_tiny_model()
    make_weights(models_dir)
    patched = load(nodes, model).clone()
    chunks = []
    patched.set_model_attn1_output_patch(lambda n, extra: chunks.append(len(extra["cond_or_uncond"])) or n)
    joint = sample(nodes, patched)
    assert set(chunks) == {2}

    def fake_free(device=None, torch_free_too=False):  # no room for two chunks; attention kernels still fine
        return (10**12, 10**12) if torch_free_too else 1

    chunks.clear()
    monkeypatch.setattr(comfy.model_management, "get_free_memory", fake_free)
    split = sample(nodes, patched)
    assert set(chunks) == {1}  # cond and uncond ran as separate passes
    torch.testing.assert_close(split[0], joint[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(split[1], joint[1], atol=1e-4, rtol=1e-4)


def test_plain_sampling_afterwards_and_interrupt_leave_nothing_patched(nodes, models_dir):
    import comfy.model_management
    import comfy.sample

    model = build_tiny_model()
    make_weights(models_dir)
    noise = comfy.sample.prepare_noise(torch.zeros(2, 4, 8, 8), 7)

    def plain():
        return comfy.sample.sample(model, noise, 2, 2.0, "euler", "normal", POS_G, NEG, torch.zeros(2, 4, 8, 8))

    before = plain()
    patched = load(nodes, model)
    sample(nodes, patched)
    torch.testing.assert_close(plain(), before, atol=0, rtol=0)

    def interrupt(n, extra_options):
        raise comfy.model_management.InterruptProcessingException()

    broken = patched.clone()
    broken.set_model_attn2_output_patch(interrupt)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        sample(nodes, broken)
    assert not leftover_overrides(model)
    torch.testing.assert_close(plain(), before, atol=0, rtol=0)


def test_runs_on_a_clone_and_on_another_model_object(nodes, models_dir):
    """Dynamic VRAM and multi-GPU run a clone, or a copy of the model, made after the node ran."""
    import comfy.model_patcher

    model = build_tiny_model()
    make_weights(models_dir)
    patched = load(nodes, model)
    want = sample(nodes, patched)
    torch.testing.assert_close(sample(nodes, patched.clone())[0], want[0], atol=0, rtol=0)
    # a second model object with the same weights (newer ComfyUI cannot deep-copy a model: its config refuses)
    other = comfy.model_patcher.ModelPatcher(build_tiny_model().model, model.load_device, model.offload_device)
    other.model_options = copy.deepcopy(patched.model_options)
    other.wrappers = copy.deepcopy(patched.wrappers)
    torch.testing.assert_close(sample(nodes, other)[0], want[0], atol=1e-6, rtol=0)
    plain_other = comfy.model_patcher.ModelPatcher(build_tiny_model().model, model.load_device, model.offload_device)
    assert (sample(nodes, plain_other)[0] - want[0]).abs().max() > 1e-3


HALF_TOLERANCE = {torch.float16: 5e-3, torch.bfloat16: 4e-2}
"""Max |half - fp32| of the sampled latents relative to their max |fp32| (2 Euler steps, CFG 2, tiny random UNet
and dual model; measured: fp16 1.1e-3, bf16 1.2e-2)."""


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_models_match_fp32(nodes, models_dir, dtype):
    model = build_tiny_model(dtype=dtype)
    assert next(model.model.diffusion_model.parameters()).dtype == dtype
    make_weights(models_dir)
    g, a = sample(nodes, load(nodes, model), steps=2)
    want_g, want_a = sample(nodes, load(nodes, build_tiny_model()), steps=2)
    plain_g, _ = sample(nodes, build_tiny_model(), steps=2)
    effect = (plain_g - want_g).abs().max() / want_g.abs().max()  # what the dual model changes: 3.9e-2
    for got, want in ((g, want_g), (a, want_a)):
        error = (got.float() - want).abs().max() / want.abs().max()
        assert error < HALF_TOLERANCE[dtype] and error < effect / 2, f"{dtype}: relative error {error:.3g}"


def test_wrong_files_give_clear_errors(nodes, models_dir):
    from safetensors.torch import save_file

    save_file(
        {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight": torch.zeros(4, 32)},
        models_dir / "plain.safetensors",
    )
    with pytest.raises(ValueError, match="ordinary single-branch LoRA"):
        load(nodes, build_tiny_model(), "plain.safetensors")
    wide = DualAdapter(DualConfig(rank=2, saim=False), (64, 128, 256, 256), CONTEXT)
    to_dual_file(wide).save(models_dir / "wide.safetensors")
    with pytest.raises(ValueError, match=r"trained for a UNet with channels \(64, 128, 256, 256\)"):
        load(nodes, build_tiny_model(), "wide.safetensors")
    model = load(
        nodes, build_tiny_model(), "wide.safetensors" if False else make_weights(models_dir) and "dual.safetensors"
    )
    with pytest.raises(ValueError, match="already has a Dual LoRA"):
        load(nodes, model)


def bcm_model(nodes, model, vae, strength=1.0, saim=True, name="bcm.safetensors"):
    node = nodes.NODE_CLASS_MAPPINGS["DualAnoDiffBackgroundCompensation"]()
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(5))
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:48, 16:48] = 1.0
    return node.apply(load(nodes, model, name, saim=saim), vae, image, strength, object_mask=mask)[0]


def test_background_compensation_changes_global_rows_only(nodes, models_dir, tiny_sd15):
    _, _, vae = tiny_sd15
    model = build_tiny_model()
    make_weights(models_dir, "bcm.safetensors", bcm=True)
    plain = sample(nodes, load(nodes, model, "bcm.safetensors", saim=False))
    with_bg = sample(nodes, bcm_model(nodes, model, vae, saim=False))
    off = sample(nodes, bcm_model(nodes, model, vae, strength=0.0, saim=False))
    assert (with_bg[0] - plain[0]).abs().max() > 1e-3
    torch.testing.assert_close(with_bg[1], plain[1], atol=1e-5, rtol=1e-5)  # anomaly branch untouched
    torch.testing.assert_close(off[0], plain[0], atol=1e-5, rtol=1e-5)
    assert not leftover_overrides(model)
    with_saim = sample(nodes, bcm_model(nodes, model, vae, saim=True), n=1, hw=(8, 16), cfg=1.0)
    assert torch.isfinite(with_saim[0]).all()


def test_background_compensation_matches_anodiff_diffusers_path(nodes, models_dir, tiny_sd15):
    from dualanodiff_pack.nodes.model.background import blacken_object

    _, _, vae = tiny_sd15
    model = build_tiny_model()
    adapter = make_weights(models_dir, "bcm.safetensors", bcm=True)
    g, a = sample(nodes, bcm_model(nodes, model, vae), n=2, steps=3, cfg=2.0)
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(5))
    mask = torch.zeros(1, 64, 64)
    mask[:, 16:48, 16:48] = 1.0
    bg = vae.encode(blacken_object(image, mask))
    grey = vae.encode(torch.full((1, 64, 64, 3), 0.5))
    ref = reference_euler(model, adapter, n=2, steps=3, cfg=2.0, seed=42, background=(bg, grey))
    torch.testing.assert_close(model_space(model, g, a), ref, atol=1e-4, rtol=1e-4)


def test_blacken_object_is_the_library_blackout_per_image(nodes):
    """The node blacks out through ``anodiff.data.objects.blackened_background``: image * (1 - mask), one mask
    for the batch or one per image, a mask of another size resized to the image."""
    from dualanodiff_pack.nodes.model.background import blacken_object

    g = torch.Generator().manual_seed(3)
    image, soft = torch.rand(2, 16, 16, 3, generator=g), torch.rand(2, 16, 16, generator=g)
    torch.testing.assert_close(blacken_object(image, soft), image * (1 - soft[..., None]), atol=1e-6, rtol=0)
    one = torch.rand(16, 16, generator=g)
    torch.testing.assert_close(blacken_object(image, one), image * (1 - one[None, ..., None]), atol=1e-6, rtol=0)
    small = torch.rand(1, 8, 8, generator=g)
    resized = torch.nn.functional.interpolate(small[:, None], size=(16, 16), mode="bilinear")[:, 0]
    torch.testing.assert_close(blacken_object(image, small), image * (1 - resized[..., None]), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="3 masks for 2 background images"):
        blacken_object(image, torch.rand(3, 16, 16, generator=g))


def test_background_compensation_refuses_files_without_bcm(nodes, models_dir, tiny_sd15):
    _, _, vae = tiny_sd15
    make_weights(models_dir, "bcm.safetensors", bcm=False)
    with pytest.raises(ValueError, match="has no BCM weights"):
        bcm_model(nodes, build_tiny_model(), vae)
    node = nodes.NODE_CLASS_MAPPINGS["DualAnoDiffBackgroundCompensation"]()
    make_weights(models_dir, "bcm.safetensors", bcm=True)
    with pytest.raises(ValueError, match="object_mask is empty"):
        node.apply(
            load(nodes, build_tiny_model(), "bcm.safetensors"),
            vae,
            torch.rand(1, 64, 64, 3),
            1.0,
            object_mask=torch.zeros(1, 64, 64),
        )
    with pytest.raises(ValueError, match="needs the MODEL output of Load Dual LoRA"):
        node.apply(build_tiny_model(), vae, torch.rand(1, 64, 64, 3), 1.0, object_mask=torch.zeros(1, 64, 64))
    once = node.apply(load(nodes, build_tiny_model(), "bcm.safetensors"), vae, torch.rand(1, 64, 64, 3), 1.0)[0]
    with pytest.raises(ValueError, match="already has Background Compensation"):  # a second one would halve rows twice
        node.apply(once, vae, torch.rand(1, 64, 64, 3), 1.0)


def test_loader_reads_the_authors_bin(nodes, models_dir):
    from official_reference import install_official

    from anodiff.cli import main as cli

    model = build_tiny_model()
    _, official = install_official(diffusers_twin(model), rank=4, bcm=False)
    torch.save(official, models_dir / "authors.bin")
    assert cli(["convert", str(models_dir / "authors.bin"), str(models_dir / "ours.safetensors"), "--any-width"]) == 0
    from_bin = sample(nodes, load(nodes, model, "authors.bin"))
    from_ours = sample(nodes, load(nodes, model, "ours.safetensors"))
    torch.testing.assert_close(from_bin[0], from_ours[0], atol=0, rtol=0)
    assert (from_bin[0] - sample(nodes, model)[0]).abs().max() > 1e-3


def test_text_encoder_lora_reaches_clip(nodes, models_dir, tiny_sd15):
    from tiny import encode_prompt

    _, clip, _ = tiny_sd15
    g = torch.Generator().manual_seed(9)
    text = {}
    for i in range(2):
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            base = f"text_model.encoder.layers.{i}.self_attn.{proj}"
            text[f"{base}.lora_A.weight"] = torch.randn(2, 64, generator=g) * 0.2
            text[f"{base}.lora_B.weight"] = torch.randn(64, 2, generator=g) * 0.2
    make_weights(models_dir, "text.safetensors", text=text)
    loader = nodes.NODE_CLASS_MAPPINGS["DualAnoDiffLoadLoRA"]()
    base = encode_prompt(clip, "a vfx with sks")[0][0]
    _, with_lora = loader.load(build_tiny_model(), clip, "text.safetensors", 1.0, 1.0, 1.0)
    _, zero = loader.load(build_tiny_model(), clip, "text.safetensors", 1.0, 1.0, 0.0)
    assert (encode_prompt(with_lora, "a vfx with sks")[0][0] - base).abs().max() > 1e-3
    torch.testing.assert_close(encode_prompt(zero, "a vfx with sks")[0][0], base)
    torch.testing.assert_close(encode_prompt(clip, "a vfx with sks")[0][0], base)  # the input CLIP is untouched


def test_background_compensation_segments_the_object_without_a_mask(nodes, models_dir, tiny_sd15):
    from dualanodiff_pack.nodes.model.background import object_saliency

    _, _, vae = tiny_sd15
    image = torch.full((1, 64, 64, 3), 0.9)
    image[:, 20:44, 20:44] = torch.tensor([0.8, 0.1, 0.1])  # a red object on a plain background
    saliency = object_saliency(image)
    assert saliency[:, 24:40, 24:40].mean() > saliency[:, :8, :8].mean() + 0.3
    make_weights(models_dir, "bcm.safetensors", bcm=True)
    node = nodes.NODE_CLASS_MAPPINGS["DualAnoDiffBackgroundCompensation"]()
    patched = node.apply(load(nodes, build_tiny_model(), "bcm.safetensors"), vae, image, 1.0)[0]
    assert torch.isfinite(sample(nodes, patched, n=1)[0]).all()
