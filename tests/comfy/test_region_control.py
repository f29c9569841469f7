"""Region control through the nodes: defect inside the region, the photo untouched outside it."""

from __future__ import annotations

import pytest
import torch
from dual_files import write_dual_weights
from pack import import_pack
from tiny import build_tiny_model


@pytest.fixture
def nodes(comfyui_root, tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.setitem(folder_paths.folder_names_and_paths, "dualanodiff", ([str(tmp_path)], {".safetensors"}))
    write_dual_weights(tmp_path / "dual.safetensors")
    return import_pack().nodes.NODE_CLASS_MAPPINGS


def photo_and_region(size=64):
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    photo = torch.stack([0.3 + 0.4 * xx, 0.5 + 0.2 * yy, 0.6 - 0.3 * xx * yy], -1)[None]
    region = torch.zeros(1, size, size)
    region[:, 16:40, 24:48] = 1
    return photo, region


def cond(seed, width=64):
    return [[torch.randn(1, 77, width, generator=torch.Generator().manual_seed(seed)), {}]]


def test_region_controlled_pairs_keep_the_photo_outside_the_region(nodes, tiny_sd15):
    _, _, vae = tiny_sd15
    photo, region = photo_and_region()
    model, _ = nodes["DualAnoDiffLoadLoRA"]().load(build_tiny_model(), None, "dual.safetensors", 1.0, 1.0, 1.0)
    (latent,) = nodes["DualAnoDiffRegionLatent"]().make(vae, photo, region, batch_size=2)
    g, a, _ = nodes["DualAnoDiffSampler"]().sample(
        model, cond(1), cond(2), cond(3), latent, 7, 3, 2.0, "euler", "normal", 1.0
    )
    assert g["samples"].shape == (2, 4, 8, 8)

    outside = torch.ones(8, 8, dtype=torch.bool)
    outside[2:5, 3:6] = False  # latent cells touched by the region (pixels 16:40 x 24:48 at /8)
    assert latent["samples"].shape == (4, 4, 8, 8) and latent["anodiff_pairs"] == 4  # pairs: nothing hidden
    start, grey = latent["samples"][0::2], latent["samples"][1::2]
    torch.testing.assert_close(g["samples"][:, :, outside], start[:, :, outside], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(a["samples"][:, :, outside], grey[:, :, outside], atol=1e-4, rtol=1e-4)
    assert (g["samples"][:, :, ~outside] - start[:, :, ~outside]).abs().max() > 1e-2  # generated inside

    decoded = vae.decode(g["samples"])
    mask = torch.ones(2, 64, 64)
    image, clipped = nodes["DualAnoDiffCompositeRegion"]().paste(decoded, photo, region, 4, mask=mask)
    far = torch.ones(64, 64, dtype=torch.bool)
    far[12:44, 20:52] = False  # the region grown by the 4-pixel feather
    assert (image[:, far] - photo.expand(2, -1, -1, -1)[:, far]).abs().max() == 0
    assert torch.equal(clipped, region.expand(2, -1, -1))


def test_region_nodes_validate_inputs(nodes, tiny_sd15):
    _, _, vae = tiny_sd15
    photo, region = photo_and_region()
    with pytest.raises(ValueError, match="multiples of 8"):
        nodes["DualAnoDiffRegionLatent"]().make(vae, photo[:, :60], region[:, :60], 1)
    with pytest.raises(ValueError, match="differ in size"):
        nodes["DualAnoDiffRegionLatent"]().make(vae, photo, region[:, :32, :32], 1)
    for name in ("DualAnoDiffRegionLatent", "DualAnoDiffCompositeRegion"):
        for section in nodes[name].INPUT_TYPES().values():
            assert all(opts.get("tooltip") for _, opts in section.values())
    with pytest.raises(ValueError, match="source has 2 photos for 4 generated images"):
        nodes["DualAnoDiffCompositeRegion"]().paste(torch.rand(4, 64, 64, 3), torch.rand(2, 64, 64, 3), region, 4)
