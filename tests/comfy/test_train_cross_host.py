"""Issue 22 item 3: one training step for both hosts. ``anodiff train`` (diffusers + accelerate) and Train Dual LoRA
(ComfyUI) run the same ``TrainingSession``: from the same seed and data they start from bit-identical weights
(UNet adapter and text-encoder LoRA, whose init order used to differ) and draw bit-identical batches, timesteps and
noise at every step (the latent cache consumes the same draws whether the host's VAE gives a variance or not).
What remains host-specific is the forward itself (tests/comfy/test_train_nodes.py compares it within float
tolerance), so with a learning rate of 0 the two hosts' weights after training are bit-identical too."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
import torch
from test_train import write_fixed_defect_set
from tiny import TINY_UNET_CONFIG, build_tiny_sd15

from anodiff.train import step
from anodiff.weights.load import load_dual

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")
RES, STEPS = 32, 3


@pytest.fixture(scope="module")
def nodes(comfyui_root):
    from pack import import_pack

    return import_pack().nodes


def recording(draws: list, monkeypatch) -> None:
    """Record the timesteps and noise of every step (``pair_loss`` noises the pair latents with them), in the
    library and in the pack's copy of it (the nodes import ``anodiff`` under the pack's package name)."""
    real = step.add_noise

    def add_noise(alphas, latents, noise, t):
        draws.append((t.detach().cpu().clone(), noise.detach().cpu().clone(), tuple(latents.shape)))
        return real(alphas, latents, noise, t)

    copies = [m for name, m in sys.modules.items() if name.endswith("anodiff.train.step")]
    assert len(copies) >= 2, [name for name in sys.modules if name.endswith("train.step")]
    for module in copies:
        monkeypatch.setattr(module, "add_noise", add_noise)


def test_cli_trainer_and_train_node_give_the_same_init_and_draws_from_the_same_seed(nodes, tmp_path, monkeypatch):
    from tiny_diffusers import save_tiny_sd15

    from anodiff.train.trainer import TrainConfig, Trainer

    channels = tuple(TINY_UNET_CONFIG["model_channels"] * m for m in TINY_UNET_CONFIG["channel_mult"])
    base = save_tiny_sd15(tmp_path / "base", channels, TINY_UNET_CONFIG["context_dim"], sd15_vae=True)  # 8x VAE
    data = write_fixed_defect_set(tmp_path / "data", n=9, size=RES)
    settings = {"steps": STEPS, "batch_size": 2, "rank": 4, "seed": 7}
    draws = []
    recording(draws, monkeypatch)
    config = TrainConfig(
        base=str(base),
        data=str(data),
        output=str(tmp_path / "cli"),
        resolution=RES,
        text_rank=4,
        lr=0.0,
        checkpoint_every=1000,
        preview_every=1000,
        progress=False,
        **settings,
    )
    trainer = Trainer(config)
    try:
        cli = load_dual(trainer.run())
    finally:
        trainer.close()

    cli_draws = list(draws)
    draws.clear()
    photos = sorted((data / "images").iterdir())[:3]  # the CLI's training third: floor(9 / 3), in name order
    images = torch.stack([torch.from_numpy(cv2.imread(str(p))[..., ::-1].astype(np.float32) / 255) for p in photos])
    masks = torch.stack([torch.from_numpy(cv2.imread(str(data / "masks" / p.name), 0) / 255.0).float() for p in photos])
    model, clip, vae = build_tiny_sd15()
    node = nodes.NODE_CLASS_MAPPINGS["DualAnoDiffTrain"]()
    _, _, trained, _ = node.train(
        model,
        clip,
        vae,
        images,
        masks,
        STEPS,
        0.0,
        settings["rank"],
        settings["batch_size"],
        settings["seed"],
        False,
        True,
        False,
        resolution=RES,
        preview_every=0,
        autosave_every=0,
    )

    node_draws = draws
    assert len(cli_draws) == len(node_draws) == STEPS
    for (t_cli, noise_cli, shape_cli), (t_node, noise_node, shape_node) in zip(cli_draws, node_draws):
        assert shape_cli == shape_node
        assert torch.equal(t_cli, t_node) and torch.equal(noise_cli, noise_node)
    assert set(cli.tensors) == set(trained.dual.tensors) and cli.has_text_lora
    for key, value in cli.tensors.items():
        assert torch.equal(value, trained.dual.tensors[key]), key
