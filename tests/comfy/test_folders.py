"""Folder inputs read only inside ComfyUI's input/output folders and the folders listed in user/dualanodiff.yaml."""

from __future__ import annotations

import numpy as np
import pytest
from pack import import_pack
from PIL import Image


@pytest.fixture
def comfy_dirs(comfyui_root, tmp_path):
    """input/, output/ and user/ of a ComfyUI in tmp_path, a photo in each of input/photos, output/photos and a
    folder outside all of them, restored afterwards."""
    import folder_paths

    import_pack()
    saved = (folder_paths.get_input_directory(), folder_paths.get_output_directory(), folder_paths.get_user_directory())
    dirs = {name: tmp_path / name for name in ("input", "output", "user", "elsewhere")}
    for path in dirs.values():
        (path / "photos").mkdir(parents=True)
        Image.fromarray(np.full((16, 24, 3), 90, np.uint8)).save(path / "photos" / "a.png")
    folder_paths.set_input_directory(str(dirs["input"]))
    folder_paths.set_output_directory(str(dirs["output"]))
    folder_paths.set_user_directory(str(dirs["user"]))
    yield dirs
    folder_paths.set_input_directory(saved[0])
    folder_paths.set_output_directory(saved[1])
    folder_paths.set_user_directory(saved[2])


def load_photos(folder: str):
    from dualanodiff_pack.nodes.regions.sources import DualAnoDiffLoadPhotoFolder

    return DualAnoDiffLoadPhotoFolder().load(folder, 0, 0, "list")


def defect_set(folder: str):
    from dualanodiff_pack.nodes.train.trainset import resolve_folder

    return resolve_folder(folder)


OUTSIDE = "is outside the folders this node may read"


@pytest.mark.parametrize("read, node", [(load_photos, "Load Photo Folder"), (defect_set, "Load Defect Set")])
def test_dot_dot_and_absolute_paths_outside_are_refused(comfy_dirs, read, node):
    outside = comfy_dirs["elsewhere"] / "photos"
    for folder in ("../elsewhere/photos", "photos/../../elsewhere/photos", str(outside), "/etc", "~"):
        with pytest.raises(ValueError, match=f"{node}: folder .* {OUTSIDE}.*dualanodiff.yaml"):
            read(folder)


def test_inside_input_and_output_are_read(comfy_dirs):
    images, names, count = load_photos("photos")  # relative: inside input/
    assert count == 1 and names == ["a.png"] and images[0].shape == (1, 16, 24, 3)
    for folder in (comfy_dirs["input"] / "photos", comfy_dirs["output"] / "photos", "photos/../photos"):
        assert load_photos(str(folder))[2] == 1
    assert defect_set(str(comfy_dirs["output"] / "photos")) == str(comfy_dirs["output"] / "photos")


def test_folders_listed_in_the_config_are_read(comfy_dirs):
    outside = comfy_dirs["elsewhere"] / "photos"
    config = comfy_dirs["user"] / "dualanodiff.yaml"
    config.write_text(f"allowed_folders:\n  - {comfy_dirs['elsewhere']}\n", encoding="utf-8")
    assert load_photos(str(outside))[2] == 1  # inside a listed folder
    assert load_photos("../elsewhere/photos")[2] == 1
    with pytest.raises(ValueError, match=OUTSIDE):
        load_photos(str(comfy_dirs["user"]))  # the config's own folder is not listed
    config.write_text("allowed_folders: /one/path\n", encoding="utf-8")
    with pytest.raises(ValueError, match="dualanodiff.yaml: 'allowed_folders' must be a list of folder paths"):
        load_photos(str(outside))
