"""Load Dual LoRA: dual weights only in its list, ordinary LoRAs named at queue time, each file folded once."""

from __future__ import annotations

import gc

import pytest
import torch
from dual_files import write_dual_weights
from pack import import_pack
from safetensors.torch import save_file
from tiny import build_tiny_model
from workflow_tools import node_classes, run_node


@pytest.fixture(scope="module")
def pack(comfyui_root):
    return import_pack()


@pytest.fixture
def folders(pack, tmp_path, monkeypatch):
    """models/dualanodiff with one dual file and one ordinary LoRA; models/loras with the same two."""
    import folder_paths

    ours, loras = tmp_path / "dualanodiff", tmp_path / "loras"
    for folder in (ours, loras):
        write_dual_weights(folder / "crack.safetensors")
        save_file(
            {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32)},
            str(folder / "style_lora.safetensors"),
        )
    names = dict(folder_paths.folder_names_and_paths)
    names["dualanodiff"] = ([str(ours)], {".safetensors", ".bin"})
    names["loras"] = ([str(loras)], {".safetensors"})
    monkeypatch.setattr(folder_paths, "folder_names_and_paths", names)
    monkeypatch.setattr(folder_paths, "filename_list_cache", {})
    return ours, loras


def test_the_list_holds_dual_weights_only(pack, folders):
    from dualanodiff_pack.nodes.model.loader import DualAnoDiffLoadLoRA, list_files

    assert list_files() == ["crack.safetensors", "loras/crack.safetensors"]
    assert DualAnoDiffLoadLoRA.INPUT_TYPES()["required"]["lora_name"][0] == list_files()


def test_an_ordinary_lora_is_named_at_queue_time(pack, folders):
    from dualanodiff_pack.nodes.model.loader import DualAnoDiffLoadLoRA

    assert DualAnoDiffLoadLoRA.VALIDATE_INPUTS("crack.safetensors") is True
    for name in ("style_lora.safetensors", "loras/style_lora.safetensors"):
        message = DualAnoDiffLoadLoRA.VALIDATE_INPUTS(name)
        assert message.startswith("Load Dual LoRA: lora_name: style_lora.safetensors: this looks like an ordinary")
    assert "missing.safetensors" in DualAnoDiffLoadLoRA.VALIDATE_INPUTS("missing.safetensors")


def test_a_strength_change_folds_and_reads_nothing_again(pack, folders, monkeypatch):
    from dualanodiff_pack.anodiff.model.saim_fold import FoldedSAIM
    from dualanodiff_pack.nodes.model import files
    from dualanodiff_pack.nodes.model.patch import find_dual

    folds, reads = [], []
    fold, read = FoldedSAIM.from_saim.__func__, files.load_dual
    monkeypatch.setattr(FoldedSAIM, "from_saim", classmethod(lambda cls, s: folds.append(1) or fold(cls, s)))
    monkeypatch.setattr(files, "load_dual", lambda *a, **k: reads.append(1) or read(*a, **k))
    loader = node_classes(pack.nodes)[0]["DualAnoDiffLoadLoRA"]
    base = build_tiny_model()

    def load(strength, model=base):
        return run_node(
            loader,
            model=model,
            clip=None,
            lora_name="crack.safetensors",
            strength_global=strength,
            strength_anomaly=1.0,
            strength_clip=1.0,
        )[0]

    first = load(1.0)
    assert len(reads) == 1 and len(folds) == 32  # one read, one fold per SAIM site
    second = load(0.5)
    assert len(reads) == 1 and len(folds) == 32  # a strength change: nothing heavy again
    assert find_dual(second).adapter is find_dual(first).adapter
    assert find_dual(second).strengths == (0.5, 1.0) and find_dual(first).strengths == (1.0, 1.0)
    half = load(1.0, build_tiny_model(dtype=torch.float16))  # another compute dtype: folded again, for it
    assert next(find_dual(half).adapter.parameters()).dtype == torch.float16
    assert len(folds) == 64 and len(reads) == 2
    del half
    gc.collect()
    assert files.cached_files() == 1  # the fp16 fold went with its last MODEL
    del first, second
    gc.collect()
    assert files.cached_files() == 0  # and the fp32 one with its own
    load(1.0)
    assert len(folds) == 96  # freed, so folded again when needed again
