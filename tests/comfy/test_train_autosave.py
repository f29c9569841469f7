"""Issue 22 item 2: Train Dual LoRA loses nothing. Cancel (raised by the progress bar as ComfyUI's server does)
and an exception at step k autosave the finished steps with their optimiser state, and continuing that file gives
the weights of the uninterrupted run; autosave_every writes during the run."""

from __future__ import annotations

import sys

import pytest
import torch
from test_train_nodes import train, training_pairs
from tiny import build_tiny_sd15

from anodiff.weights.load import load_dual


@pytest.fixture(scope="module")
def nodes(comfyui_root):
    from pack import import_pack

    return import_pack().nodes


@pytest.fixture
def models_dir(tmp_path, comfyui_root, monkeypatch):
    import folder_paths

    (tmp_path / "dualanodiff").mkdir()
    for name in ("dualanodiff", "dualanodiff_state"):
        monkeypatch.setitem(folder_paths.folder_names_and_paths, name, ([str(tmp_path / name)], {".safetensors"}))
    monkeypatch.setattr(folder_paths, "filename_list_cache", {}, raising=False)
    return tmp_path / "dualanodiff"


def autosaves(folder) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in (folder / "autosave").glob("*.safetensors"))


def assert_same_weights(a, b) -> None:
    assert set(a.dual.tensors) == set(b.dual.tensors)
    for key, value in a.dual.tensors.items():
        torch.testing.assert_close(b.dual.tensors[key], value, atol=1e-6, rtol=1e-5, msg=key)


def test_cancel_autosaves_the_finished_steps_and_resuming_equals_the_uninterrupted_run(nodes, models_dir, monkeypatch):
    import comfy.model_management as mm
    import comfy.utils

    model, clip, vae = build_tiny_sd15()
    images, masks = training_pairs()
    _, _, straight, _ = train(nodes, model, clip, vae, images, masks, 5, autosave_every=0)
    for path in (models_dir / "autosave").glob("*"):
        path.unlink()  # the uninterrupted run's final autosave

    def server_hook(value, total, preview, node_id=None):  # ComfyUI's hook: raises when Cancel was pressed
        if value == 2:
            mm.interrupt_current_processing(True)
        mm.throw_exception_if_processing_interrupted()

    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", server_hook)
    with pytest.raises(mm.InterruptProcessingException):
        train(nodes, model, clip, vae, images, masks, 5, autosave_every=0)
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", None)
    assert not mm.processing_interrupted()
    (name,) = autosaves(models_dir)
    assert load_dual(models_dir / name, sd15_only=False).metadata["steps"] == "2"  # after the step, not mid-step
    _, _, resumed, loss = train(nodes, model, clip, vae, images, masks, 3, resume_file=name, autosave_every=0)
    assert resumed.steps == 5 and len(loss["loss"]) == 5
    assert_same_weights(straight, resumed)


def test_an_exception_at_step_k_autosaves_steps_before_it_and_resuming_equals_the_uninterrupted_run(
    nodes, models_dir, monkeypatch
):
    train_run = sys.modules[nodes.__name__ + ".train.train_run"]
    model, clip, vae = build_tiny_sd15()
    images, masks = training_pairs()
    _, _, straight, _ = train(nodes, model, clip, vae, images, masks, 5, autosave_every=0)
    for path in (models_dir / "autosave").glob("*"):
        path.unlink()
    real_forward, calls = train_run.unet_forward, []

    def failing_forward(m, context):
        forward = real_forward(m, context)

        def run(*args):
            calls.append(1)
            if len(calls) == 4:  # step 4's forward: steps 1-3 are finished
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return forward(*args)

        return run

    monkeypatch.setattr(train_run, "unet_forward", failing_forward)
    with pytest.raises(torch.OutOfMemoryError) as raised:
        train(nodes, model, clip, vae, images, masks, 5, autosave_every=0)
    monkeypatch.setattr(train_run, "unet_forward", real_forward)
    (name,) = autosaves(models_dir)
    assert name in "\n".join(getattr(raised.value, "__notes__", []))  # the error says where the steps went
    assert load_dual(models_dir / name, sd15_only=False).metadata["steps"] == "3"
    _, _, resumed, _ = train(nodes, model, clip, vae, images, masks, 2, resume_file=name, autosave_every=0)
    assert resumed.steps == 5
    assert_same_weights(straight, resumed)


def test_autosave_every_writes_during_the_run_and_the_default_saves(nodes, models_dir, monkeypatch):
    import comfy.utils

    model, clip, vae = build_tiny_sd15()
    images, masks = training_pairs()
    seen = []

    def hook(value, total, preview, node_id=None):
        seen.append([load_dual(models_dir / n, sd15_only=False).metadata["steps"] for n in autosaves(models_dir)])

    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK", hook)
    _, _, trained, _ = train(nodes, model, clip, vae, images, masks, 5, autosave_every=2)
    assert seen == [[], ["2"], ["2"], ["4"], ["4"]]  # one file per run, replaced as it goes
    (name,) = autosaves(models_dir)
    final = load_dual(models_dir / name, sd15_only=False)
    assert final.metadata["steps"] == "5"  # and the end of the run
    for key, value in trained.dual.tensors.items():
        assert torch.equal(final.tensors[key], value), key
    defaults = nodes.NODE_CLASS_MAPPINGS["DualAnoDiffTrain"].INPUT_TYPES()["optional"]["autosave_every"][1]
    assert defaults["default"] > 0 and "resume_file" in defaults["tooltip"]
