"""ComfyUI adapters over ``anodiff``: each module contributes its node classes to the mappings below."""

from __future__ import annotations

from .dataset import dataset as dataset_nodes
from .dataset import mask as mask_nodes
from .graft import graft as graft_nodes
from .model import background, loader
from .regions import defects, random_region, region_control, sources, stitch
from .sampling import modular, sampler
from .train import train as train_nodes
from .train import train_save, trainset

NODE_MODULES = (
    loader,
    background,
    sampler,
    modular,
    graft_nodes,
    mask_nodes,
    random_region,
    region_control,
    stitch,
    defects,
    sources,
    dataset_nodes,
    trainset,
    train_nodes,
    train_save,
)
NODE_CLASS_MAPPINGS: dict[str, type] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
for _module in NODE_MODULES:
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
