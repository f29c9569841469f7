"""Random stand-ins for the metric networks, saved in the layout of the real files (tests only)."""

from __future__ import annotations

from pathlib import Path

import torch


def save_random_inception(path: Path) -> Path:
    """A state dict with the keys and shapes of the 2015-12-05 Inception (1008 logits) and random weights. Its
    BatchNorm statistics are set from one batch of noise: with the defaults (mean 0, var 1) the signal fades to 1e-8
    and every image gets the same prediction (IS = 1, which would make a comparison trivial)."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = 1.0
    with torch.no_grad():
        net.train()(torch.rand(4, 3, 299, 299) * 2 - 1)
    torch.save(net.state_dict(), path)
    return path
