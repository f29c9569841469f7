from __future__ import annotations

import pytest
import torch
from official_reference import install_official, official_text_lora
from safetensors.torch import save_file
from tiny_diffusers import TINY_CHANNELS, TINY_CONTEXT, randomize_, tiny_text_encoder, tiny_unet

from anodiff import DualAdapter, DualConfig, DualWeightsError, load_dual, to_dual_file
from anodiff.cli import main as cli
from anodiff.sd15.processor import DualUNet, UNetPass
from anodiff.weights.schema import META_FIELDS, OPTIONAL_META_FIELDS
from anodiff.weights.text import add_text_lora, attached_lora, load_text_lora, text_lora_state


def inputs(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    made = (
        torch.randn(4, 4, 8, 8, generator=g),
        torch.randn(4, 7, TINY_CONTEXT, generator=g),
        torch.randn(2, 4, 8, 8, generator=g),
    )
    return tuple(t.to(dtype) for t in made)


def run(unet, adapter, bcm=False, training_form=False, dtype=torch.float32):
    """Inference (SAIM folded, LoRA fused) or, with training_form, the unfolded SAIM and LoRA that training runs."""
    x, ctx, bg = inputs(dtype=dtype)
    unet, adapter = unet.to(dtype), adapter.to(dtype)
    with torch.set_grad_enabled(training_form):
        return DualUNet(unet, adapter)(x, 250, ctx, background=bg if bcm else None).detach()


@pytest.mark.parametrize("bcm", [False, True])
def test_save_load_is_bit_identical(tmp_path, bcm):
    config = DualConfig(rank=4, bcm=bcm, text_rank=2)
    adapter = randomize_(DualAdapter(config, TINY_CHANNELS, TINY_CONTEXT))
    te = add_text_lora(tiny_text_encoder(), config.text_rank, config.text_lora_alpha)
    with torch.no_grad():
        for p in attached_lora(te).parameters():
            p.normal_(std=0.1)
    path = to_dual_file(adapter, text_lora_state(te), steps=123, resolution=64).save(tmp_path / "m.safetensors")

    loaded = load_dual(path)
    assert loaded.metadata["steps"] == "123" and loaded.metadata["has_bcm"] == str(bcm).lower()
    assert set(loaded.metadata) == set(META_FIELDS) - set(OPTIONAL_META_FIELDS)
    unet = tiny_unet()
    assert torch.equal(run(unet, adapter, bcm), run(unet, loaded.adapter(), bcm))

    te2 = add_text_lora(tiny_text_encoder(), config.text_rank, config.text_lora_alpha)
    load_text_lora(te2, loaded.text_tensors())
    ids = torch.tensor([[49406, 320, 1125, 49407]])
    with torch.no_grad():
        assert torch.equal(te(ids).last_hidden_state, te2(ids).last_hidden_state)
        assert not torch.equal(te(ids).last_hidden_state, tiny_text_encoder()(ids).last_hidden_state)


def official_output(bcm, dtype=torch.float32):
    """The authors' model (``official_reference``) on ``inputs()``, computed in ``dtype``; and its weights."""
    x, ctx, bg = inputs(dtype=dtype)
    ref_unet = tiny_unet().to(dtype)
    state, official = install_official(ref_unet, rank=4, bcm=bcm, dtype=dtype)
    with torch.no_grad():
        if bcm:  # the authors' RefOnlyNoisedUNet: write pass with the blend prompt, then read pass
            state.mode = "w"
            ref_unet(bg, 250, ctx[0::2])
            state.mode = "r"
        return ref_unet(x, 250, ctx).sample, official


@pytest.mark.parametrize("bcm", [False, True])
def test_authors_format_matches_reference_directly_and_after_convert(tmp_path, bcm):
    expected, official = official_output(bcm)
    te = tiny_text_encoder()
    official.update(official_text_lora(te, rank=4))
    torch.save(official, tmp_path / "pytorch_lora_weights.bin")

    direct = load_dual(tmp_path / "pytorch_lora_weights.bin", sd15_only=False)
    assert direct.config.bcm == bcm and direct.has_text_lora
    out = tmp_path / "converted.safetensors"
    assert cli(["convert", str(tmp_path / "pytorch_lora_weights.bin"), str(out), "--any-width"]) == 0
    converted = load_dual(out)

    unet = tiny_unet()
    a, b = run(unet, direct.adapter(), bcm), run(unet, converted.adapter(), bcm)
    assert torch.equal(a, b)
    # the same math as the authors' in float64, where rounding cannot hide a difference: the training form
    # (unfolded SAIM as a two-key sigmoid, BranchLoRA) and the inference form (SAIM folded, LoRA fused/merged)
    expected64, _ = official_output(bcm, torch.float64)
    for training_form in (True, False):
        got = run(tiny_unet(), direct.adapter(), bcm, training_form=training_form, dtype=torch.float64)
        torch.testing.assert_close(got, expected64, atol=1e-10, rtol=1e-9)
    # in float32 this random UNet turns rounding into ~2.6e-4 (the authors' own code against float64)
    torch.testing.assert_close(run(unet, direct.adapter(), bcm, training_form=True), expected, atol=5e-4, rtol=1e-4)
    torch.testing.assert_close(a, expected, atol=5e-4, rtol=1e-4)


def test_sd15_check_is_default_for_authors_files(tmp_path):
    ref_unet = tiny_unet()
    _, official = install_official(ref_unet, rank=4, bcm=False)
    torch.save(official, tmp_path / "w.bin")
    with pytest.raises(DualWeightsError, match=r"has shape \(4, 32\), expected \(4, 320\)"):
        load_dual(tmp_path / "w.bin")


def sd15_key(site="down_blocks.0.attentions.0.transformer_blocks.0.attn2", rest="to_k_lora.0.down.weight"):
    return f"unet.{site}.processor.{rest}"


def test_sdxl_lora_in_authors_format_is_refused(tmp_path):
    torch.save({sd15_key(rest="to_k_lora.0.down.weight"): torch.zeros(32, 2048)}, tmp_path / "xl.bin")
    with pytest.raises(
        DualWeightsError, match=r"attn2.processor.to_k_lora.0.down.weight.*|shape \(32, 2048\), expected \(32, 768\)"
    ):
        load_dual(tmp_path / "xl.bin")
    xl_site = "down_blocks.1.attentions.0.transformer_blocks.1.attn1"
    torch.save({sd15_key(site=xl_site): torch.zeros(32, 640)}, tmp_path / "xl2.bin")
    with pytest.raises(DualWeightsError, match="not one of the 32 SD1.5 attentions"):
        load_dual(tmp_path / "xl2.bin")


@pytest.mark.parametrize(
    "keys",
    [
        ["lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight"],
        ["unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"],
    ],
)
def test_single_branch_lora_is_refused_with_its_first_key(tmp_path, keys):
    save_file({k: torch.zeros(4, 320) for k in keys}, tmp_path / "plain.safetensors")
    with pytest.raises(DualWeightsError, match=f"ordinary single-branch LoRA.*{keys[0]}"):
        load_dual(tmp_path / "plain.safetensors")


def small_file(tmp_path):
    adapter = DualAdapter(DualConfig(rank=2, saim=False), TINY_CHANNELS, TINY_CONTEXT)
    return to_dual_file(adapter).save(tmp_path / "small.safetensors"), adapter


def test_truncated_partial_misshaped_and_wrong_dtype_files(tmp_path):
    path, _ = small_file(tmp_path)
    data = path.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(DualWeightsError, match="cut.safetensors: not a readable .safetensors file"):
        load_dual(tmp_path / "cut.safetensors")

    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has keys() but no __iter__)
    first = next(iter(tensors))
    partial = dict(tensors)
    partial.pop(first)
    save_file(partial, tmp_path / "partial.safetensors", metadata=meta)
    with pytest.raises(DualWeightsError, match=f"missing key '{first}'"):
        load_dual(tmp_path / "partial.safetensors")

    bad = dict(tensors)
    bad[first] = torch.zeros(3, 3)
    save_file(bad, tmp_path / "bad.safetensors", metadata=meta)
    with pytest.raises(DualWeightsError, match=rf"bad.safetensors: key '{first}' has shape \(3, 3\), expected \(2, "):
        load_dual(tmp_path / "bad.safetensors")

    ints = dict(tensors)
    ints[first] = tensors[first].to(torch.int32)
    save_file(ints, tmp_path / "int.safetensors", metadata=meta)
    with pytest.raises(DualWeightsError, match="expected a floating point tensor"):
        load_dual(tmp_path / "int.safetensors")

    save_file(tensors, tmp_path / "alpha.safetensors", metadata={**meta, "alpha": "x"})
    with pytest.raises(DualWeightsError, match="alpha.safetensors: metadata 'alpha' must be a number, got 'x'"):
        load_dual(tmp_path / "alpha.safetensors")


def test_missing_file_and_cli_errors(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_dual(tmp_path / "nope.safetensors")
    path, _ = small_file(tmp_path)
    assert cli(["convert", str(path), str(path)]) == 2
    assert "pass --force" in capsys.readouterr().err
    assert cli(["convert", str(tmp_path / "missing.bin"), str(tmp_path / "o.safetensors")]) == 2
    assert "missing.bin" in capsys.readouterr().err
    assert cli(["info", str(path)]) == 0
    assert "rank 2" in capsys.readouterr().out


def test_check_unet_names_both_widths(tmp_path):
    path, _ = small_file(tmp_path)
    with pytest.raises(DualWeightsError, match=r"channels \(32, 64, 64, 64\).*channels \(320, 640, 1280, 1280\)"):
        load_dual(path).check_unet((320, 640, 1280, 1280), 768)


def test_loaded_adapter_keeps_dtype_option(tmp_path):
    path, adapter = small_file(tmp_path)
    half = load_dual(path).adapter(dtype=torch.float16)
    assert all(p.dtype == torch.float16 for p in half.parameters())
    assert not any(p.is_meta for p in half.parameters())
    x, ctx, _ = inputs()
    with torch.no_grad():
        assert torch.equal(
            DualUNet(tiny_unet(), load_dual(path).adapter())(x, 5, ctx, unet_pass=UNetPass()),
            DualUNet(tiny_unet(), adapter)(x, 5, ctx),
        )
