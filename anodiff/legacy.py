"""The flat module paths of anodiff 0.1 (``anodiff.processor``, ``anodiff.masks`` ...), still importable.

The library moved into subpackages; scripts written against the old paths keep working. ``MOVED`` maps each old
module to its new home; ``install`` adds one import finder that answers only for those names under this package
and hands back the new module itself (so ``anodiff.processor.DualUNet is anodiff.sd15.processor.DualUNet`` and a
monkeypatch on either is seen by both). Old modules whose name is now a subpackage (``data``, ``weights``,
``regions``, ``generate``, ``train``) forward their old names through ``forward`` in that package's ``__init__``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from collections.abc import Callable

MOVED = {
    "assets": "common.assets", "imageio": "common.imageio", "jobs": "common.jobs", "precision": "common.precision",
    "bcm": "model.bcm", "config": "model.config", "dual": "model.dual", "lora": "model.lora",
    "lora_fused": "model.lora_fused", "pairs": "model.pairs", "saim": "model.saim", "saim_fold": "model.saim_fold",
    "sites": "model.sites", "convert": "weights.convert", "text": "weights.text", "base": "sd15.load",
    "sd15_config": "sd15.config", "processor": "sd15.processor", "pipeline": "sd15.pipeline",
    "layouts": "data.layouts", "masks": "data.masks", "composite": "regions.composite", "stitch": "regions.stitch",
    "region_inputs": "regions.inputs", "multi_defect": "regions.multi_defect", "coco": "dataset.coco",
    "export": "dataset.export", "filtering": "dataset.filter", "sidecar": "dataset.sidecar",
    "generate_record": "generate.record", "region_plan": "generate.plan", "sources": "generate.sources",
    "step": "train.step", "session": "train.session", "preview": "train.preview", "loss_plot": "train.loss_plot",
}  # fmt: skip


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``<package>.<old name>`` to the module at its new path."""

    def __init__(self, package: str) -> None:
        self.package = package
        self._real_specs: dict[str, object] = {}

    def find_spec(self, fullname: str, path=None, target=None):  # noqa: ANN001 (importlib's signature)
        head, _, name = fullname.rpartition(".")
        if head != self.package or name not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):  # noqa: ANN001
        module = importlib.import_module(f"{self.package}.{MOVED[spec.name.rpartition('.')[2]]}")
        self._real_specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module) -> None:  # noqa: ANN001
        """Nothing to run: the module is already loaded. Give it back the spec importlib overwrote."""
        module.__spec__ = self._real_specs.pop(module.__name__)


def install(package: str) -> None:
    """Answer the old paths under ``package`` (``anodiff``, or the ComfyUI pack's copy of it), once."""
    if not any(isinstance(f, _MovedModules) and f.package == package for f in sys.meta_path):
        sys.meta_path.append(_MovedModules(package))


def forward(*modules: str) -> Callable[[str], object]:
    """A package ``__getattr__`` that serves a name from the first of ``modules`` that has it, imported on first
    use, so ``from anodiff.data import find_samples`` (the old ``data`` module) works without loading it early."""

    def __getattr__(name: str) -> object:
        if not name.startswith("__"):
            for module in modules:
                value = getattr(importlib.import_module(module), name, _MISSING)
                if value is not _MISSING:
                    return value
        raise AttributeError(f"module {modules[0].rpartition('.')[0]!r} has no attribute {name!r}")

    return __getattr__


_MISSING = object()
