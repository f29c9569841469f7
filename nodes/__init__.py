"""ComfyUI adapters over ``anodiff``: each module contributes its node classes to the mappings below."""

from __future__ import annotations

from . import (
    background,
    dataset,
    defects,
    loader,
    mask,
    modular,
    region,
    region_control,
    sampler,
    sources,
    stitch,
    train,
    train_save,
    trainset,
)

NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
for _module in (loader, background, sampler, modular, mask, region, region_control, stitch, defects, sources, dataset,
                trainset, train, train_save):  # fmt: skip
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
