from __future__ import annotations

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
