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
    from anodiff.common import assets
    from anodiff.data import masks

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


@pytest.fixture(scope="session")
def base(tmp_path_factory):
    """A tiny SD1.5-layout diffusers folder, loaded by ``anodiff.sd15.load.load_sd15`` (the trainer's tests)."""
    from tiny_diffusers import save_tiny_sd15

    return save_tiny_sd15(tmp_path_factory.mktemp("sd15"))


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    """The same for the pipeline tests, one per module (they attach processors to what they load)."""
    from tiny_diffusers import save_tiny_sd15

    return save_tiny_sd15(tmp_path_factory.mktemp("tiny_sd15"))


@pytest.fixture(scope="module")
def plain_weights(tmp_path_factory):
    """A random tiny dual file without BCM."""
    from test_pipeline import dual_file

    return dual_file().save(tmp_path_factory.mktemp("w") / "dual.safetensors")


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    """Nine textured images with one dark square defect each, in the plain images/ + masks/ layout."""
    from test_train import write_fixed_defect_set

    return write_fixed_defect_set(tmp_path_factory.mktemp("data"))


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one process-wide state; tests switch mixed precision, a real run never does."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
