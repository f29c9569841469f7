"""The flat module paths of anodiff 0.1 still import, and give the very objects of the new layout."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from anodiff.legacy import MOVED

PACKAGES_THAT_WERE_MODULES = {
    "data": ("fewshot", ["find_samples", "split_train", "FewShotDataset", "read_image", "blackened_background"]),
    "weights": ("schema", ["DualFile", "DualWeightsError", "pack", "save_dual", "load_dual"]),
    "regions": ("placement", ["sample_regions", "foreground_mask"]),
    "generate": ("run", ["generate"]),
    "train": ("trainer", ["Trainer", "TrainConfig", "train"]),
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_path_is_the_new_module(old):
    legacy = importlib.import_module(f"anodiff.{old}")
    new = importlib.import_module(f"anodiff.{MOVED[old]}")
    assert legacy is new
    assert new.__spec__.name == f"anodiff.{MOVED[old]}", "the alias must not rename the real module"


@pytest.mark.parametrize("package", sorted(PACKAGES_THAT_WERE_MODULES))
def test_names_of_a_module_that_became_a_package_still_import(package):
    module, names = PACKAGES_THAT_WERE_MODULES[package]
    old = importlib.import_module(f"anodiff.{package}")
    for name in names:
        value = getattr(old, name)
        homes = [importlib.import_module(f"anodiff.{package}.{m}") for m in (module, "load")
                 if importlib.util.find_spec(f"anodiff.{package}.{m}")]  # fmt: skip
        assert any(getattr(home, name, None) is value for home in homes), name
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        getattr(old, "no_such_name")


def test_the_documented_top_level_names_and_processor_path():
    from anodiff.processor import DualUNet

    from anodiff import DualAdapter, DualFile, load_dual, pack
    from anodiff.model.dual import DualAdapter as new_adapter
    from anodiff.sd15.processor import DualUNet as new_unet
    from anodiff.weights.load import load_dual as new_load

    assert DualAdapter is new_adapter and DualUNet is new_unet and load_dual is new_load
    assert DualFile.__module__ == "anodiff.weights.schema" and callable(pack)


def test_old_paths_work_in_a_fresh_interpreter():
    """No earlier import in this process helps: ``import anodiff.masks`` works first thing."""
    code = (
        "import anodiff.masks, anodiff.processor, anodiff.pipeline\n"
        "from anodiff.filtering import filter_pairs\n"
        "from anodiff.export import export_dataset\n"
        "import anodiff.data.masks as m\n"
        "assert anodiff.masks is m\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_an_unknown_old_name_is_still_an_import_error():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("anodiff.no_such_module")
