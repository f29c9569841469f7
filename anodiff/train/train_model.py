"""The trainable model behind one training forward (what accelerate/DDP wrap) and its trainable parameters."""

from __future__ import annotations

import torch
from torch import nn

from ..sd15.processor import DualUNet, UNetPass


class DualTrainModel(nn.Module):
    """The trainable model behind one forward (what accelerate/DDP wrap): frozen UNet + adapter + text encoder."""

    def __init__(self, dual_unet: DualUNet, text_encoder: nn.Module, prompt_ids: torch.Tensor) -> None:
        super().__init__()
        self.dual_unet, self.text_encoder = dual_unet, text_encoder
        self.register_buffer("prompt_ids", prompt_ids, persistent=False)

    def forward(
        self, noisy: torch.Tensor, timesteps: torch.Tensor, background: torch.Tensor | None = None
    ) -> torch.Tensor:
        """noisy: (2B, 4, h, w) interleaved pairs; timesteps: (2B,); background: (B, 4, h, w) noised, or None."""
        pairs = noisy.shape[0] // 2
        context = self.text_encoder(self.prompt_ids)[0]  # (2, 77, C): [global, anomaly]
        context = context.repeat(pairs, 1, 1)
        return self.dual_unet(
            noisy,
            timesteps,
            context,
            unet_pass=UNetPass(),
            background=background,
            background_timestep=timesteps[0::2] if background is not None else None,
        )


def trainable_parameters(model: DualTrainModel) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]
