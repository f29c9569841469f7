from __future__ import annotations

import os

import pytest
from tiny_diffusers import tiny_text_encoder, tiny_unet


@pytest.fixture(scope="session")
def unet():
    return tiny_unet()


@pytest.fixture
def fresh_unet():
    return tiny_unet()


@pytest.fixture(scope="session")
def text_encoder():
    return tiny_text_encoder()


@pytest.fixture(scope="session")
def u2net():
    """The real U²-Net-P (fetched by scripts/fetch_assets.py): skipped locally when absent, a failure under CI."""
    from anodiff import assets, masks

    try:
        path = assets.u2netp_path()
    except FileNotFoundError as err:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the U²-Net-P tests: {err}", pytrace=False)
        pytest.skip(str(err))
    return masks.U2NetP(path)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core runner two OpenMP threads thrash (5-30x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
