"""O2MAG's prompt-embedding optimisation before sampling, cached per reference so later images skip it.

The target prompt's cond embedding (77 x C) is fitted so that the guided noise prediction (against the negative
prompt) matches the noise added to the reference latent at a uniform random timestep in [1, T): Adam, 500 steps,
lr 3e-3 by default. Only the embedding is optimised; the UNet stays frozen.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..common.imageio import write_atomic


def optimise_embedding(
    predict,
    scheduler: object,
    reference: torch.Tensor,
    init: torch.Tensor,
    negative: torch.Tensor,
    steps: int,
    lr: float,
    cfg: float,
    seed: int = 0,
    progress: bool = True,
    bar: Callable[[], None] | None = None,
) -> torch.Tensor:
    """(1, 77, C) embedding fitted to ``reference`` (1, 4, h, w), scaled latent. predict(x, t, context) -> noise
    (differentiable in context); ``scheduler.add_noise`` noises the reference; ``bar`` is called every step."""
    gen = torch.Generator().manual_seed(seed)
    total = int(scheduler.config.num_train_timesteps)
    with torch.inference_mode(False), torch.enable_grad():  # ComfyUI runs nodes in inference mode
        emb = init.detach().float().clone().requires_grad_(True)
        optimiser = torch.optim.Adam([emb], lr=lr)
        negative, reference = negative.detach().float().clone(), reference.detach().clone()
        for _ in tqdm(range(steps), desc="embedding optimisation", leave=False, disable=not progress):
            t = torch.randint(1, total, (1,), generator=gen)
            noise = torch.randn(reference.shape, generator=gen).to(reference)
            noisy = scheduler.add_noise(reference, noise, t)
            pred = predict(
                torch.cat([noisy, noisy]), torch.cat([t, t]).to(reference.device), torch.cat([emb, negative])
            )
            cond, uncond = pred.float().chunk(2)
            loss = F.mse_loss(uncond + cfg * (cond - uncond), noise)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if bar is not None:
                bar()
    return emb.detach()


def reference_key(reference: np.ndarray, mask: np.ndarray, **settings: object) -> str:
    """A digest of the reference image, its mask and everything else the embedding depends on."""
    h = hashlib.sha256()
    for array in (np.ascontiguousarray(reference, np.float32), np.ascontiguousarray(mask, np.uint8)):
        h.update(str(array.shape).encode())
        h.update(array.tobytes())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()[:32]


class EmbeddingBank:
    """Optimised embeddings by reference key, in memory and (with ``folder``) as ``<key>.safetensors`` files."""

    def __init__(self, folder: str | Path | None = None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.memory: dict[str, torch.Tensor] = {}
        self.made = 0

    def get(self, key: str, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The cached embedding for ``key``, else ``make()`` stored under it."""
        if key in self.memory:
            return self.memory[key]
        path = self.folder / f"{key}.safetensors" if self.folder is not None else None
        if path is not None and path.is_file():
            from safetensors.torch import load_file

            self.memory[key] = load_file(path)["embedding"]
            return self.memory[key]
        emb = make().detach().cpu().contiguous()
        self.made += 1
        self.memory[key] = emb
        if path is not None:
            from safetensors.torch import save

            write_atomic(path, save({"embedding": emb}))
        return emb
