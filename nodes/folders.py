"""Folder inputs confined like ComfyUI's own loaders: a node reads only inside ComfyUI's input and output folders
and the folders the user lists in ``<ComfyUI user folder>/dualanodiff.yaml``.

On a server started with ``--listen`` whoever reaches the page can queue a prompt, so a folder input that read any
path would let them read (and preview) any image on the machine. Paths are made absolute and normalised
(``..`` resolved) as ComfyUI's ``/view`` does, without following links: a link the user put inside input/ is
theirs to make. The config file::

    allowed_folders:
      - /data/normal_photos
      - D:\\datasets\\mvtec
"""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_NAME = "dualanodiff.yaml"
CONFIG_KEY = "allowed_folders"


def config_path() -> Path:
    import folder_paths

    return Path(folder_paths.get_user_directory()) / CONFIG_NAME


def listed_folders() -> list[Path]:
    """The folders of the config file (none when it is absent); a malformed file is an error naming it."""
    import yaml

    path = config_path()
    if not path.is_file():
        return []
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ValueError(f"{path}: cannot read the DualAnoDiff folder config ({err})") from err
    folders = data.get(CONFIG_KEY) if isinstance(data, dict) else None
    if folders is None:
        folders = []
    if not isinstance(folders, list) or not all(isinstance(f, str) and f.strip() for f in folders):
        raise ValueError(f"{path}: '{CONFIG_KEY}' must be a list of folder paths, got {folders!r}")
    return [Path(os.path.abspath(os.path.expanduser(f.strip()))) for f in folders]


def allowed_roots() -> list[Path]:
    import folder_paths

    builtin = (folder_paths.get_input_directory(), folder_paths.get_output_directory())
    return [Path(os.path.abspath(p)) for p in builtin] + listed_folders()


def confined_folder(folder: str, node: str, empty_hint: str) -> Path:
    """``folder`` (absolute, or relative to ComfyUI's input folder) as an absolute path inside an allowed root;
    ValueError naming ``node``, the input and the config file otherwise."""
    import folder_paths

    if not folder or not folder.strip():
        raise ValueError(f"{node}: folder is empty; {empty_hint}")
    path = Path(folder.strip()).expanduser()
    if not path.is_absolute():
        path = Path(folder_paths.get_input_directory()) / path
    path = Path(os.path.abspath(path))
    roots = allowed_roots()
    if not any(path.is_relative_to(root) for root in roots):
        raise ValueError(
            f"{node}: folder '{folder.strip()}' ({path}) is outside the folders this node may read: ComfyUI's input "
            f"folder ({roots[0]}), its output folder ({roots[1]}) and the folders listed under '{CONFIG_KEY}' in "
            f"{config_path()}. Put the files inside the input folder, or list their folder in that file"
        )
    return path
