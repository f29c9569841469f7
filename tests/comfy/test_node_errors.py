"""Node errors speak the node's language: its title and its input names, never a CLI flag or another node's title."""

from __future__ import annotations

import pytest
import torch
from pack import import_pack


@pytest.fixture(scope="module")
def nodes(comfyui_root):
    return import_pack().nodes.NODE_CLASS_MAPPINGS


@pytest.fixture
def output_dir(comfyui_root, tmp_path, monkeypatch):
    import folder_paths

    monkeypatch.setattr(folder_paths, "get_output_directory", lambda: str(tmp_path / "output"))
    monkeypatch.setattr(folder_paths, "get_input_directory", lambda: str(tmp_path / "input"))
    (tmp_path / "input").mkdir()
    return tmp_path


def test_export_defects_errors_name_export_defects_and_its_inputs(nodes, output_dir):
    export = nodes["DualAnoDiffExportDefects"]()
    images, labels = torch.rand(1, 16, 16, 3), torch.zeros(1, 16, 16)
    labels[0, 4:8, 4:8] = 1
    for output, message in (("", "output_dir is empty"), ("../away", "output_dir '../away' leads outside")):
        with pytest.raises(ValueError, match=f"^Export Defects: {message}"):
            export.export(images, labels, "crack", output, "part", "mixed")
    with pytest.raises(ValueError, match="^Export Defects: folder must be a plain folder name, got 'a/b'"):
        export.export(images, labels, "crack", "set", "part", "a/b")
    with pytest.raises(ValueError, match="^Export Dataset: output_dir is empty"):
        nodes["DualAnoDiffExportDataset"]().export(images, labels, "", "part", "crack", "mvtec")


def test_load_defect_set_names_its_inputs_not_cli_flags(nodes, output_dir):
    one_category = output_dir / "input" / "bottle"
    (one_category / "test" / "crack").mkdir(parents=True)
    node = nodes["DualAnoDiffLoadTrainingSet"]()
    with pytest.raises(ValueError, match="^Load Defect Set: .* looks like one category") as err:
        node.load("bottle", "", "", "floor", 64, False)
    assert "dataset folder and 'bottle' as the category" in str(err.value) and "--" not in str(err.value)
    with pytest.raises(ValueError, match="^Load Defect Set: folder .*missing does not exist"):
        node.load("missing", "", "", "floor", 64, False)


def test_resume_and_resume_file_together_are_an_error(nodes):
    from dualanodiff_pack.nodes.train.train_inputs import starting_point

    previous = object()  # a connected 'resume' (a previous Train Dual LoRA's weights)
    with pytest.raises(
        ValueError, match="Train Dual LoRA: both 'resume' \\(connected\\) and 'resume_file' \\(a.safetensors"
    ):
        starting_point(previous, "a.safetensors")
    assert starting_point(previous, "none") is previous
    assert starting_point(None, "none") is None


def test_two_resolutions_cannot_disagree(nodes, output_dir):
    from dualanodiff_pack.nodes.train.train_inputs import check_resolution

    images, masks = torch.rand(2, 40, 40, 3), torch.zeros(2, 40, 40)
    masks[:, 8:20, 8:20] = 1
    made, _, _, _ = nodes["DualAnoDiffLoadTrainingSet"]().load(
        "", "", "", "floor", 32, False, images=images, masks=masks
    )
    assert made.shape == (2, 32, 32, 3)
    train = nodes["DualAnoDiffTrain"]()
    with pytest.raises(
        ValueError, match="Train Dual LoRA: resolution is 64 but Load Defect Set made the photos at resolution 32"
    ):
        train.train(None, None, None, made, masks, 1, 1e-4, 4, 1, 0, False, False, False, resolution=64)
    check_resolution(made, 32)  # the same: resized once, by Load Defect Set
    check_resolution(images, 64)  # photos from any other node: resized once, by the trainer
