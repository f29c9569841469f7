"""The downstream localisation network: DRAEM's discriminative U-Net and its focal loss (reference §9.3).

Built from the DRAEM paper's description (Zavrtanik et al., ICCV 2021): six encoder levels of two 3x3 conv-BN-ReLU
with widths (1, 2, 4, 8, 8, 8) x ``base_width`` and max-pooling between them; a decoder that upsamples bilinearly,
applies conv-BN-ReLU, concatenates the skip and applies two more; a final 3x3 conv to 2 classes (normal, defect).
Initialisation as the authors': conv weights N(0, 0.02), BatchNorm weights N(1, 0.02) and biases 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LEVEL_WIDTHS = (1, 2, 4, 8, 8, 8)


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class DiscriminativeUNet(nn.Module):
    """(N, 3, H, W) image in [0, 1] -> (N, 2, H, W) logits; H and W must be multiples of 32."""

    def __init__(self, base_width: int = 64, in_channels: int = 3, out_channels: int = 2) -> None:
        super().__init__()
        if base_width < 1:
            raise ValueError(f"base_width must be >= 1, got {base_width}")
        widths = [base_width * m for m in LEVEL_WIDTHS]
        self.encoders = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.encoders.append(nn.Sequential(*_conv(cin, w), *_conv(w, w)))
            cin = w
        self.ups, self.decoders = nn.ModuleList(), nn.ModuleList()
        for deep, skip in zip(reversed(widths[1:]), reversed(widths[:-1])):
            self.ups.append(
                nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True), *_conv(deep, deep))
            )
            self.decoders.append(nn.Sequential(*_conv(deep + skip, skip), *_conv(skip, skip)))
        self.head = nn.Conv2d(widths[0], out_channels, 3, padding=1)
        self.apply(_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(f"input size {tuple(x.shape[-2:])} must be a multiple of 32 (5 poolings)")
        skips = []
        for k, encoder in enumerate(self.encoders):
            x = encoder(F.max_pool2d(x, 2) if k else x)
            skips.append(x)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips[:-1])):
            x = decoder(torch.cat([up(x), skip], dim=1))
        return self.head(x)


def _init(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, smooth: float = 1e-5) -> torch.Tensor:
    """Mean focal loss -(1 - p_t)^gamma log p_t on the softmax of (N, 2, H, W) logits; target (N, 1, H, W) in {0, 1}.

    As DRAEM's: the one-hot target is clamped to [smooth, 1 - smooth] and ``smooth`` is added to p_t before the log.
    """
    probs = logits.softmax(dim=1)
    onehot = torch.cat([1 - target, target], dim=1).clamp(smooth, 1.0 - smooth)
    pt = (onehot * probs).sum(dim=1) + smooth
    return (-(1 - pt).pow(gamma) * pt.log()).mean()


def anomaly_probability(logits: torch.Tensor) -> torch.Tensor:
    """(N, H, W) defect probability from (N, 2, H, W) logits."""
    return logits.softmax(dim=1)[:, 1]


def image_scores(probability: torch.Tensor, pool: int = 21) -> torch.Tensor:
    """(N,) image score: the max of the ``pool`` x ``pool`` average-pooled probability map, as the authors."""
    pooled = F.avg_pool2d(probability[:, None], pool, stride=1, padding=pool // 2)
    return pooled.flatten(1).max(dim=1).values


__all__ = ["DiscriminativeUNet", "anomaly_probability", "focal_loss", "image_scores"]
