"""Fixtures for tests that need ComfyUI: the in-process tiny SD1.5 model and a headless server.

ComfyUI comes from ``scripts/fetch_assets.py`` (``.cache/comfyui``) or ``$ANODIFF_COMFYUI``
and needs the ComfyUI virtualenv (``.venv-comfy``). Where either is missing these tests
skip, except under CI (``CI`` set), where a missing ComfyUI is a failure: CI must run them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from tiny import REPO_ROOT, ComfyUINotFoundError, build_tiny_sd15, init_comfy

collect_ignore = ["test_nodes"]


def pytest_configure(config: pytest.Config) -> None:
    """Register ``slow`` so ``--strict-markers`` accepts it and ``-m 'not slow'`` can skip the server tests."""
    config.addinivalue_line("markers", "slow: starts a ComfyUI server process (seconds, not milliseconds)")


def _unavailable(reason: str) -> None:
    """Skip locally, fail under CI, where every ComfyUI test must run."""
    if os.environ.get("CI"):
        pytest.fail(f"ComfyUI tests cannot run under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Run each ComfyUI test on one torch thread and restore the count afterwards.

    On the 2-core machines, 2 threads plus any other load (a server, a parallel job)
    made a 0.1 s tiny-model sampling take over 10 s.
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def comfyui_root() -> Path:
    """ComfyUI's folder, made importable in-process and pinned to the CPU."""
    try:
        root = init_comfy(cpu=True)
        import comfy.model_management
        import comfy.sample  # noqa: F401
    except ComfyUINotFoundError as err:
        _unavailable(str(err))
    except ImportError as err:
        _unavailable(f"ComfyUI does not import with {sys.executable} ({err}); use .venv-comfy/bin/python")
    return root


@pytest.fixture(scope="session")
def tiny_sd15(comfyui_root: Path) -> tuple[Any, Any, Any]:
    """``(MODEL, CLIP, VAE)`` shared by the session; ``clone()`` the MODEL before patching it."""
    return build_tiny_sd15()


@pytest.fixture(scope="session")
def tiny_server(comfyui_root: Path) -> Iterator[Any]:
    """A headless ComfyUI server with only the core and test-only nodes."""
    from server import comfy_server

    with comfy_server() as running:
        yield running


@pytest.fixture(scope="session")
def pack_server(comfyui_root: Path) -> Iterator[Any]:
    """A headless ComfyUI server with this repository linked in as ``custom_nodes/dualanodiff``."""
    if not (REPO_ROOT / "__init__.py").is_file():
        pytest.skip("the node pack has no root __init__.py yet")
    from server import comfy_server

    with comfy_server(packs={"dualanodiff": REPO_ROOT}) as running:
        yield running
