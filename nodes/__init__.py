"""ComfyUI adapters over ``anodiff``: each module contributes its node classes to the mappings below."""

from __future__ import annotations

from .dataset import dataset, mask
from .model import background, loader
from .regions import defects, random_region, region_control, sources, stitch
from .sampling import graft, modular, sampler
from .train import train, train_save, trainset

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
for _module in (loader, background, sampler, modular, mask, random_region, region_control, stitch, defects, sources, dataset,
                trainset, train, train_save, graft):  # fmt: skip
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
