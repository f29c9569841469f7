"""The dual model as ComfyUI's memory manager sees it: one folded copy in the MODEL's dtype, counted in its size."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from dual_files import write_dual_weights
from pack import import_pack
from tiny import build_tiny_model


@pytest.fixture
def loader(comfyui_root, tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "dualanodiff", ([str(tmp_path)], {".safetensors"}))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {}, raising=False)
    write_dual_weights(tmp_path / "dual.safetensors")
    return import_pack().nodes.NODE_CLASS_MAPPINGS["DualAnoDiffLoadLoRA"]()


def tensor_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_model_size_grows_by_the_dual_model_and_no_second_copy_stays(loader, monkeypatch, dtype):
    from dualanodiff_pack.anodiff.weights import schema as weights
    from dualanodiff_pack.nodes.model.patch import find_dual
    from dualanodiff_pack.nodes.sampling.sampler import sample_pairs

    loaded = []
    original = weights.DualFile.adapter

    def spy(self, *args, **kwargs):
        adapter = original(self, *args, **kwargs)
        loaded.append(weakref.ref(adapter))
        return adapter

    monkeypatch.setattr(weights.DualFile, "adapter", spy)
    base = build_tiny_model(dtype=dtype)
    model, _ = loader.load(base, None, "dual.safetensors", 1.0, 1.0, 1.0)
    dual = find_dual(model)
    gc.collect()
    assert loaded and all(ref() is None for ref in loaded)  # the float32 file copy is gone
    params = list(dual.adapter.parameters())
    assert {p.dtype for p in params} == {dtype}
    assert model.model_size() == base.model_size() + tensor_bytes(dual.adapter)
    assert model.clone().model_size() == model.model_size()
    from dualanodiff_pack.anodiff.weights.load import load_dual

    unfolded = sum(p.numel() for p in original(load_dual(loader_path(), sd15_only=False)).parameters())
    assert sum(p.numel() for p in params) < 0.7 * unfolded  # SAIM folded: 2 CxC per site instead of 5

    pointers = {p.data_ptr() for p in params}
    cond = [[torch.zeros(1, 77, 64), {}]]
    sample_pairs(model, cond, cond, cond, {"samples": torch.zeros(1, 4, 8, 8)}, 0, 2, 2.0, "euler", "normal", 1.0)
    assert {p.data_ptr() for p in dual.adapter.parameters()} == pointers  # used in place: no per-call copies
    assert len(dual._scales) == 1  # one scale table for the run's device and dtype, not one per Linear call


def loader_path() -> str:
    from dualanodiff_pack.nodes.model.loader import resolve

    return resolve("dual.safetensors")


def test_load_and_detach_callbacks_move_the_dual_model_with_the_unet(loader):
    import comfy.model_management
    import comfy.patcher_extension
    from dualanodiff_pack.nodes.model.patch import find_dual

    model, _ = loader.load(build_tiny_model(), None, "dual.safetensors", 1.0, 1.0, 1.0)
    dual = find_dual(model)
    calls = model.get_all_callbacks(comfy.patcher_extension.CallbacksMP.ON_LOAD)
    assert dual.on_load in calls and dual.on_detach in model.get_all_callbacks(
        comfy.patcher_extension.CallbacksMP.ON_DETACH
    )

    class Stub:  # a patcher: where it offloads to, and whether its last load was partial (--lowvram)
        offload_device = torch.device("cpu")

        class model:
            model_lowvram = False

    moves = []
    dual._move, real_move = moves.append, dual._move  # record where it goes; this machine has no second device
    gpu = torch.device("cuda", 0)
    dual.on_load(Stub, gpu, 0, False, True)  # full load: with the UNet
    dual.on_detach(Stub)  # unloaded: back to the offload device
    Stub.model.model_lowvram = True  # partial load (--lowvram, --novram): stays offloaded, each call casts
    dual.on_load(Stub, gpu, 1 << 20, False, False)
    assert moves == [gpu, torch.device("cpu"), torch.device("cpu")]
    dual._move = real_move
    comfy.model_management.load_models_gpu([model])  # the real call path on this machine's device
    assert {p.device for p in dual.adapter.parameters()} == {model.load_device}


@pytest.mark.parametrize("mode", ["lowvram", "novram"])
def test_partial_loads_sample_like_a_full_load(loader, monkeypatch, mode):
    """--lowvram / --novram load the UNet partially: ComfyUI leaves weights offloaded and casts them per call, and the
    dual model stays on the offload device. On a CPU ComfyUI always loads fully, so the load budget is forced here
    (half the UNet, or ComfyUI's --novram budget of 0.1 byte) and ComfyUI's own partial-load path runs."""
    import comfy.model_management as mm
    from dualanodiff_pack.nodes.model.patch import find_dual
    from dualanodiff_pack.nodes.sampling.sampler import sample_pairs

    base = build_tiny_model()
    model, _ = loader.load(base, None, "dual.safetensors", 1.0, 1.0, 1.0)
    cond = [[torch.randn(1, 77, 64, generator=torch.Generator().manual_seed(1)), {}]]
    latent = {"samples": torch.zeros(2, 4, 8, 8)}

    def sample():
        mm.unload_all_models()
        glob, anomaly, _ = sample_pairs(
            model, cond, cond, cond, latent, 3, 3, 2.0, "euler", "normal", 1.0, preview=False
        )
        return glob["samples"], anomaly["samples"]

    full = sample()
    assert not model.model.model_lowvram
    budget = base.model_size() // 2 if mode == "lowvram" else 0.1
    original = mm.LoadedModel.model_load
    monkeypatch.setattr(mm.LoadedModel, "model_load", lambda self, _=0, **kwargs: original(self, budget, **kwargs))
    partial = sample()
    cast = [m for m in model.model.diffusion_model.modules() if getattr(m, "comfy_cast_weights", False)]
    assert model.model.model_lowvram and cast  # the partial path ran: weights cast per call
    assert {p.device for p in find_dual(model).adapter.parameters()} == {model.offload_device}
    for got, want in zip(partial, full):  # a full load merges the LoRA into the weights where that pays, a partial
        torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)  # one adds it to the cast output: rounding only
    monkeypatch.setattr(mm.LoadedModel, "model_load", original)
    mm.unload_all_models()


def test_the_dual_model_is_on_the_load_device_when_sampling_starts(loader, monkeypatch):
    """ComfyUI skips ``load`` (and ON_LOAD) for a clone of an already loaded model, e.g. after a strength change,
    while the previous clone's detach moves the shared patch to the offload device: sampling must move it back."""
    import comfy.model_management as mm
    from dualanodiff_pack.nodes.model.patch import DualPatch, find_dual
    from dualanodiff_pack.nodes.sampling.sampler import sample_pairs

    moves = []
    real_move = DualPatch._move
    monkeypatch.setattr(
        DualPatch, "_move", lambda self, device: (moves.append((self, device)), real_move(self, device))
    )
    base = build_tiny_model()
    cond = [[torch.zeros(1, 77, 64), {}]]
    mm.unload_all_models()
    for strength in (1.0, 0.5):  # the second clone shares the loaded base model
        model, _ = loader.load(base, None, "dual.safetensors", strength, 1.0, 1.0)
        moves.clear()
        sample_pairs(
            model,
            cond,
            cond,
            cond,
            {"samples": torch.zeros(1, 4, 8, 8)},
            0,
            1,
            1.0,
            "euler",
            "normal",
            1.0,
            preview=False,
        )
        mine = [device for patch, device in moves if patch is find_dual(model)]
        assert mine and torch.device(mine[-1]) == model.load_device
    mm.unload_all_models()


def test_comfyui_never_moves_the_adapter_being_trained(loader):
    """Train Dual LoRA's model runs the trainee itself (fold=False): its optimiser state lives on the trainer's
    device, so a preview's load, partial load or detach must not move it (a loaded model's folded copy does move)."""
    from dualanodiff_pack.anodiff import DualAdapter, DualConfig
    from dualanodiff_pack.nodes.model.patch import DualPatch

    class Stub:  # a patcher whose offload device is somewhere else (meta: a move there is visible)
        offload_device = load_device = torch.device("meta")

        class model:
            model_lowvram = True

    trainee = DualAdapter(DualConfig(rank=2), (32, 64, 64, 64), 64)
    patch = DualPatch(trainee, (1.0, 1.0), fold=False)
    for callback in (patch.on_detach, patch.on_pre_run, lambda p: patch.on_load(p, torch.device("meta"))):
        callback(Stub)
        assert {p.device.type for p in trainee.parameters()} == {"cpu"}
    folded = DualPatch(trainee, (1.0, 1.0))
    folded.on_detach(Stub)
    assert {p.device.type for p in folded.adapter.parameters()} == {"meta"}


def test_a_partial_unload_frees_the_dual_model_with_the_unet(loader):
    """ComfyUI frees part of a loaded UNet for another model (``LoadedModel.model_unload(memory_to_free)``): the
    dual model leaves the load device with it, and the MODEL's counted size still holds it."""
    import comfy.model_management as mm
    from dualanodiff_pack.nodes.model.patch import find_dual
    from dualanodiff_pack.nodes.sampling.sampler import sample_pairs

    base = build_tiny_model()
    model, _ = loader.load(base, None, "dual.safetensors", 1.0, 1.0, 1.0)
    dual = find_dual(model)
    cond = [[torch.randn(1, 77, 64, generator=torch.Generator().manual_seed(1)), {}]]
    latent = {"samples": torch.zeros(1, 4, 8, 8)}

    def sample():
        return sample_pairs(model, cond, cond, cond, latent, 3, 2, 2.0, "euler", "normal", 1.0, preview=False)[0]

    mm.unload_all_models()
    full = sample()
    (loaded,) = [m for m in mm.current_loaded_models if m.model is model]
    moves, real_move = [], dual._move
    dual._move = lambda device: (moves.append(torch.device(device)), real_move(device))
    try:
        assert loaded.model_unload(memory_to_free=base.model_size() // 2) is False  # partial: it stays listed
        assert model.model.model_lowvram and moves and moves[-1] == model.offload_device
        assert model.model_size() == base.model_size() + tensor_bytes(dual.adapter)
        again = sample()  # sampling the partially loaded model: the dual model follows ComfyUI's partial rule
        assert moves[-1] == model.offload_device
    finally:
        dual._move = real_move
        mm.unload_all_models()
    torch.testing.assert_close(again["samples"], full["samples"], atol=2e-4, rtol=1e-4)


def test_dynamic_vram_falls_back_on_a_cpu_and_samples_the_same(loader):
    """ComfyUI 0.33 loads models as ``ModelPatcherDynamic`` on an NVIDIA GPU by default (dynamic VRAM); on a CPU
    load device it builds the plain ``ModelPatcher``. As far as a CPU allows: the Dual LoRA on a MODEL built
    through that class samples exactly like one built directly. The GPU path: bench/comfy_vram_modes.py."""
    import comfy.model_management as mm
    import comfy.model_patcher

    dynamic = getattr(comfy.model_patcher, "ModelPatcherDynamic", None)
    if dynamic is None:
        pytest.skip("this ComfyUI has no dynamic VRAM (it came with 0.33)")
    from dualanodiff_pack.nodes.sampling.sampler import sample_pairs

    plain = build_tiny_model()
    through = dynamic(plain.model, load_device=plain.load_device, offload_device=plain.offload_device)
    assert not through.is_dynamic()  # the CPU fallback
    cond = [[torch.randn(1, 77, 64, generator=torch.Generator().manual_seed(2)), {}]]
    outs = []
    for base in (plain, through):
        model, _ = loader.load(base, None, "dual.safetensors", 1.0, 1.0, 1.0)
        mm.unload_all_models()
        outs.append(
            sample_pairs(
                model,
                cond,
                cond,
                cond,
                {"samples": torch.zeros(1, 4, 8, 8)},
                5,
                2,
                2.0,
                "euler",
                "normal",
                1.0,
                preview=False,
            )[1]["samples"]
        )
    mm.unload_all_models()
    torch.testing.assert_close(outs[0], outs[1], atol=0, rtol=0)
