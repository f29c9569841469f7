"""Helpers for the shipped workflows: load them, turn the UI format into the API format, and check both.

The UI format (what the ComfyUI frontend saves) keeps widget values positionally, in the order of the node's
``INPUT_TYPES`` (required, then optional), with UI-only extras in between: the seed's ``control_after_generate``
value ("randomize", "fixed", ...) and LoadImage's upload button ("image"). The API format (what ``POST /prompt``
takes) names every input. comfyui-internals.md §8.4 describes both.

Node schemas come from the classes themselves: ours through ``pack.import_pack()``, ComfyUI's core nodes by
loading its ``nodes.py`` (and the ``comfy_extras`` files we use) under private module names, because this
repository's ``nodes`` package would shadow ComfyUI's ``nodes`` module. ComfyUI must already be importable
(the ``comfyui_root`` fixture does that).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from tiny import REPO_ROOT, comfyui_dir

WORKFLOWS_DIR = REPO_ROOT / "example_workflows"
API_DIR = WORKFLOWS_DIR / "api"

FRONTEND_ONLY = {"Note", "MarkdownNote"}
"""Node types that exist only in the frontend; the API format leaves them out."""
UNSUPPORTED_UI_NODES = {"Reroute", "PrimitiveNode"}
"""Frontend nodes that forward links or values; the converter here does not resolve them."""
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
SEED_CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}
LEGACY_SEED_NAMES = {"seed", "noise_seed"}
"""INT inputs the frontend gives a control_after_generate widget even without the option."""
ACTIVE_MODES = {0}
"""LiteGraph node modes: 0 always, 2 never (muted), 4 bypass."""
MUTED, BYPASSED = 2, 4
CORE_EXTRA_FILES = ("nodes_mask.py", "nodes_custom_sampler.py")
"""``comfy_extras`` files whose node classes the workflows and tests use (MaskToImage, SamplerCustomAdvanced)."""

_CORE_NODES_MODULE = "anodiff_tests_comfyui_nodes"


class WorkflowError(ValueError):
    """A workflow that cannot be converted (unknown node, wrong widget count, dangling link)."""


# ----------------------------------------------------------------------------------------------- loading


def ui_workflow_paths() -> list[Path]:
    """The UI workflows: the ``*.json`` files at the top of ``example_workflows/`` (ComfyUI lists those as
    templates)."""
    return sorted(WORKFLOWS_DIR.glob("*.json"))


def api_workflow_paths() -> list[Path]:
    """The API twins in ``example_workflows/api/``."""
    return sorted(API_DIR.glob("*.json"))


def load_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _load_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def core_node_modules() -> list[ModuleType]:
    """ComfyUI's ``nodes.py`` and the ``comfy_extras`` files in :data:`CORE_EXTRA_FILES`, loaded once.

    ``comfy_extras`` files ``import nodes``; while they load, ``sys.modules["nodes"]`` is pointed at the private
    copy of ComfyUI's ``nodes.py`` and then put back as it was, so this repository's ``nodes`` is untouched.
    """
    root = comfyui_dir()
    core = sys.modules.get(_CORE_NODES_MODULE) or _load_module(_CORE_NODES_MODULE, root / "nodes.py")
    modules = [core]
    for filename in CORE_EXTRA_FILES:
        name = f"{_CORE_NODES_MODULE}_{Path(filename).stem}"
        if name not in sys.modules:
            missing = object()
            previous = sys.modules.get("nodes", missing)
            sys.modules["nodes"] = core
            try:
                _load_module(name, root / "comfy_extras" / filename)
            finally:
                if previous is missing:
                    sys.modules.pop("nodes", None)
                else:
                    sys.modules["nodes"] = previous
        modules.append(sys.modules[name])
    return modules


def entrypoint_nodes(module: ModuleType) -> dict[str, type]:
    """Node id -> class of the new-style nodes a module registers through ``comfy_entrypoint`` (a
    ``ComfyExtension`` whose ``get_node_list`` is awaited), as ComfyUI's loader does; {} without one."""
    import asyncio

    entrypoint = getattr(module, "comfy_entrypoint", None)
    if entrypoint is None:
        return {}

    async def node_list() -> list[type]:
        return await (await entrypoint()).get_node_list()

    return {cls.GET_SCHEMA().node_id: cls for cls in asyncio.run(node_list())}


def node_classes(pack_module: ModuleType) -> tuple[dict[str, type], dict[str, str]]:
    """``(classes, display names)`` of ComfyUI core (as loaded above) plus our pack: classic nodes from
    ``NODE_CLASS_MAPPINGS`` and new-style ones from ``comfy_entrypoint`` (newer ComfyUI moved MaskToImage there)."""
    classes: dict[str, type] = {}
    names: dict[str, str] = {}
    for module in [*core_node_modules(), pack_module]:
        for node_id, cls in entrypoint_nodes(module).items():
            classes[node_id] = cls
            display = getattr(cls.GET_SCHEMA(), "display_name", None)
            if display:
                names[node_id] = display
        classes.update(getattr(module, "NODE_CLASS_MAPPINGS", {}))
        names.update(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", {}))
    return classes, names


def run_node(cls: type, **inputs: Any) -> tuple:
    """A node's outputs, classic (``FUNCTION`` on an instance) or new-style (classmethod ``execute``)."""
    if hasattr(cls, "FUNCTION") and not hasattr(cls, "GET_SCHEMA"):
        return tuple(getattr(cls(), cls.FUNCTION)(**inputs))
    out = cls.execute(**inputs)
    return tuple(out.args) if hasattr(out, "args") else tuple(out)


# ----------------------------------------------------------------------------------------------- schemas


def schema_inputs(cls: type) -> Iterator[tuple[str, str | list, dict[str, Any], bool]]:
    """``(name, type, options, required)`` for each required then optional input, in ``INPUT_TYPES`` order.

    ``type`` is a string (``"MODEL"``, ``"INT"``, ...) or, for a combo, the list of choices.
    """
    spec = cls.INPUT_TYPES()
    for section, required in (("required", True), ("optional", False)):
        for name, entry in (spec.get(section) or {}).items():
            kind = entry[0]
            options = entry[1] if len(entry) > 1 and isinstance(entry[1], Mapping) else {}
            yield name, (list(kind) if isinstance(kind, (list, tuple)) else str(kind)), dict(options), required


def is_widget(kind: str | list, options: Mapping[str, Any]) -> bool:
    """Whether the frontend shows this input as a widget (value in ``widgets_values``) rather than a socket."""
    if options.get("forceInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def extra_widgets(name: str, kind: str | list, options: Mapping[str, Any]) -> list[str]:
    """The UI-only values that follow this widget's own value in ``widgets_values``: ``"control"`` for the
    seed's control_after_generate ("randomize", "fixed", ...), ``"upload"`` for an upload button."""
    extra = []
    if kind in ("INT", "FLOAT") and (
        options.get("control_after_generate") or (kind == "INT" and name in LEGACY_SEED_NAMES)
    ):
        extra.append("control")
    if options.get("image_upload") or options.get("video_upload") or options.get("audio_upload"):
        extra.append("upload")
    return extra


def return_types(cls: type) -> list[str]:
    return [str(t) for t in cls.RETURN_TYPES]


def return_names(cls: type) -> list[str]:
    names = getattr(cls, "RETURN_NAMES", None)
    return list(names) if names else return_types(cls)


# ----------------------------------------------------------------------------------------------- conversion


def ui_links(ui: Mapping[str, Any]) -> dict[int, tuple[int, int, int, int, str]]:
    """Link id -> ``(from_node, from_slot, to_node, to_slot, TYPE)`` from the UI ``links`` table."""
    table = {}
    for link in ui.get("links", []):
        link_id, src, src_slot, dst, dst_slot, kind = link[:6]
        table[int(link_id)] = (int(src), int(src_slot), int(dst), int(dst_slot), str(kind))
    return table


def bypassed_source(ui: Mapping[str, Any], links: Mapping[int, tuple], src: int, slot: int) -> tuple[int, int] | None:
    """Where output ``slot`` of node ``src`` really comes from, as the frontend resolves it: a bypassed node hands
    on the input of the output's type (the same slot index first, else the first of that type), a muted node
    gives nothing (None), any other node is the source itself."""
    node = next(n for n in ui["nodes"] if n["id"] == src)
    mode = node.get("mode", 0)
    if mode == MUTED:
        return None
    if mode != BYPASSED:
        return src, slot
    kind = node["outputs"][slot]["type"]
    inputs = node.get("inputs", [])
    order = ([inputs[slot]] if slot < len(inputs) else []) + list(inputs)
    match = next((i for i in order if i["type"] == kind), None)
    if match is None or match.get("link") is None:
        return None
    return bypassed_source(ui, links, *links[match["link"]][:2])


def ui_to_api(ui: Mapping[str, Any], classes: Mapping[str, type], names: Mapping[str, str]) -> dict[str, Any]:
    """The API graph of a UI workflow, as the frontend's "Export (API)" would write it.

    Widget values are matched to ``INPUT_TYPES`` in order, skipping the UI-only extras; linked inputs become
    ``[source_id, output_index]``. Frontend-only, muted and bypassed nodes are dropped (links through a bypassed
    node rerouted as the frontend does: ``bypassed_source``); unknown node types and leftover or missing widget
    values raise :class:`WorkflowError`.
    """
    links = ui_links(ui)
    api: dict[str, Any] = {}
    for node in ui["nodes"]:
        kind = node["type"]
        if kind in FRONTEND_ONLY:
            continue
        where = f"node {node['id']} ({kind})"
        if kind in UNSUPPORTED_UI_NODES:
            raise WorkflowError(f"{where}: {kind} nodes are not supported by this converter")
        if node.get("mode", 0) in (MUTED, BYPASSED):
            continue
        if node.get("mode", 0) not in ACTIVE_MODES:
            raise WorkflowError(f"{where}: mode {node.get('mode')} is not supported")
        cls = classes.get(kind)
        if cls is None:
            raise WorkflowError(f"{where}: no such node class in ComfyUI core or this pack")
        linked = {}
        for slot in node.get("inputs", []):
            if slot.get("link") is None:
                continue
            if slot["link"] not in links:
                raise WorkflowError(f"{where}: input {slot['name']!r} refers to missing link {slot['link']}")
            source = bypassed_source(ui, links, *links[slot["link"]][:2])
            if source is not None:
                linked[slot["name"]] = [str(source[0]), source[1]]
        values = list(node.get("widgets_values") or [])
        if isinstance(node.get("widgets_values"), Mapping):
            raise WorkflowError(f"{where}: widgets_values as a mapping is not supported")
        inputs: dict[str, Any] = {}
        position = 0
        for name, input_kind, options, _ in schema_inputs(cls):
            if is_widget(input_kind, options):
                extra = extra_widgets(name, input_kind, options)
                if position + 1 + len(extra) > len(values):
                    raise WorkflowError(
                        f"{where}: widgets_values ends before widget {name!r} and its UI-only values {extra} ({values})"
                    )
                inputs[name] = values[position]
                for offset, what in enumerate(extra, start=1):
                    if what == "control" and values[position + offset] not in SEED_CONTROL_VALUES:
                        raise WorkflowError(
                            f"{where}: {name!r} is followed by {values[position + offset]!r}, not one of "
                            f"{sorted(SEED_CONTROL_VALUES)} (control_after_generate)"
                        )
                position += 1 + len(extra)
            if name in linked:  # a link wins over a converted widget's stored value
                inputs[name] = linked.pop(name)
        if position != len(values):
            raise WorkflowError(f"{where}: {len(values) - position} widget values left over: {values[position:]}")
        if linked:
            raise WorkflowError(f"{where}: links into unknown inputs {sorted(linked)}")
        api[str(node["id"])] = {
            "inputs": inputs,
            "class_type": kind,
            "_meta": {"title": node.get("title") or names.get(kind, kind)},
        }
    return api


def api_edges(api: Mapping[str, Any]) -> set[tuple[str, int, str, str]]:
    """``(source_id, output_index, target_id, input_name)`` for every link of an API graph."""
    edges = set()
    for node_id, node in api.items():
        for name, value in node["inputs"].items():
            if is_link(value):
                edges.add((str(value[0]), int(value[1]), str(node_id), name))
    return edges


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def api_literals(api: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {nid: {k: v for k, v in node["inputs"].items() if not is_link(v)} for nid, node in api.items()}


# ----------------------------------------------------------------------------------------------- checks


def check_ui_structure(ui: Mapping[str, Any]) -> list[str]:
    """Internal consistency of a UI workflow: ids, the links table vs node slots, order, groups. Returns problems."""
    problems = []
    for key in ("last_node_id", "last_link_id", "nodes", "links", "groups", "config", "extra", "version"):
        if key not in ui:
            problems.append(f"missing top-level key {key!r}")
    if problems:
        return problems
    nodes = {node["id"]: node for node in ui["nodes"]}
    if len(nodes) != len(ui["nodes"]):
        problems.append("duplicate node ids")
    if max(nodes) > ui["last_node_id"]:
        problems.append(f"last_node_id {ui['last_node_id']} < largest node id {max(nodes)}")
    links = ui_links(ui)
    if len(links) != len(ui["links"]):
        problems.append("duplicate link ids")
    if links and max(links) > ui["last_link_id"]:
        problems.append(f"last_link_id {ui['last_link_id']} < largest link id {max(links)}")
    for key in ("id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs", "properties"):
        problems += [f"node {n['id']} has no {key!r}" for n in nodes.values() if key not in n]
    if problems:
        return problems
    for link_id, (src, src_slot, dst, dst_slot, kind) in links.items():
        if src not in nodes or dst not in nodes:
            problems.append(f"link {link_id} joins missing nodes {src} -> {dst}")
            continue
        outputs, inputs = nodes[src]["outputs"], nodes[dst]["inputs"]
        if src_slot >= len(outputs) or link_id not in (outputs[src_slot].get("links") or []):
            problems.append(f"link {link_id} is not listed on output {src_slot} of node {src}")
        elif outputs[src_slot]["type"] != kind:
            problems.append(
                f"link {link_id} has type {kind} but output {src_slot} of node {src} is {outputs[src_slot]['type']}"
            )
        if dst_slot >= len(inputs) or inputs[dst_slot].get("link") != link_id:
            problems.append(f"link {link_id} is not the link of input {dst_slot} of node {dst}")
        elif inputs[dst_slot]["type"] != kind:
            problems.append(
                f"link {link_id} has type {kind} but input {dst_slot} of node {dst} is {inputs[dst_slot]['type']}"
            )
    for node in nodes.values():
        for slot in node["inputs"]:
            if slot.get("link") is not None and slot["link"] not in links:
                problems.append(f"node {node['id']} input {slot['name']!r} points at missing link {slot['link']}")
        for index, slot in enumerate(node["outputs"]):
            if slot.get("slot_index", index) != index:
                problems.append(f"node {node['id']} output {slot['name']!r} has slot_index {slot.get('slot_index')}")
            for link_id in slot.get("links") or []:
                if link_id not in links or links[link_id][:2] != (node["id"], index):
                    problems.append(
                        f"node {node['id']} output {index} lists link {link_id}, which does not start there"
                    )
        if node["type"] not in FRONTEND_ONLY and node["properties"].get("Node name for S&R") != node["type"]:
            problems.append(f"node {node['id']} has no 'Node name for S&R' property equal to its type")
    orders = sorted(node["order"] for node in nodes.values())
    if orders != list(range(len(nodes))):
        problems.append(f"node orders are not 0..{len(nodes) - 1}: {orders}")
    for link_id, (src, _, dst, _, _) in links.items():
        if src in nodes and dst in nodes and nodes[src]["order"] >= nodes[dst]["order"]:
            problems.append(f"link {link_id}: node {src} runs after node {dst} in 'order'")
    for group in ui["groups"]:
        if not group.get("title") or len(group.get("bounding", [])) != 4:
            problems.append(f"group {group} needs a title and a bounding box [x, y, w, h]")
    return problems


def node_in_group(node: Mapping[str, Any], group: Mapping[str, Any]) -> bool:
    """Whether the node's box lies inside the group's bounding box (LiteGraph moves it with the group then)."""
    gx, gy, gw, gh = group["bounding"]
    (x, y), (w, h) = node["pos"], node["size"]
    return gx <= x and gy <= y and x + w <= gx + gw and y + h <= gy + gh


def validate_api(api: Mapping[str, Any], classes: Mapping[str, type], *, check_files: bool = False) -> list[str]:
    """What ComfyUI's prompt validation would reject, checked against the node classes. Returns problems.

    Class types exist; input names exist in ``INPUT_TYPES``; required inputs are given; links point at an
    existing node's existing output of the input's type; literals fit their widget (type, min/max, combo
    choice). File-name combos (checkpoints, LoRAs, input images) are checked only with ``check_files``.
    """
    problems = []
    for node_id, node in api.items():
        kind = node.get("class_type")
        cls = classes.get(kind)
        where = f"node {node_id} ({kind})"
        if cls is None:
            problems.append(f"{where}: unknown class_type")
            continue
        if "inputs" not in node:
            problems.append(f"{where}: no inputs")
            continue
        schema = {name: (k, opts, req) for name, k, opts, req in schema_inputs(cls)}
        for name in node["inputs"]:
            if name not in schema:
                problems.append(f"{where}: input {name!r} is not in INPUT_TYPES ({sorted(schema)})")
        for name, (input_kind, options, required) in schema.items():
            if name not in node["inputs"]:
                if required:
                    problems.append(f"{where}: required input {name!r} missing")
                continue
            value = node["inputs"][name]
            if is_link(value):
                src = api.get(value[0])
                src_cls = classes.get(src["class_type"]) if src else None
                if src_cls is None:
                    problems.append(f"{where}: {name!r} links to missing node {value[0]}")
                    continue
                types = return_types(src_cls)
                if value[1] >= len(types):
                    problems.append(
                        f"{where}: {name!r} links to output {value[1]} of {src['class_type']}, which has {len(types)}"
                    )
                elif isinstance(input_kind, list) or types[value[1]] != input_kind:
                    problems.append(f"{where}: {name!r} wants {input_kind}, gets {types[value[1]]}")
                continue
            problems += [f"{where}: {p}" for p in _check_literal(name, value, input_kind, options, check_files)]
    return problems


def _check_literal(name: str, value: Any, kind: str | list, options: Mapping[str, Any], check_files: bool) -> list[str]:
    if isinstance(kind, list):
        is_file_list = not kind or any("." in str(choice) for choice in kind) or options.get("image_upload")
        if (check_files or not is_file_list) and value not in kind:
            return [f"{name!r} = {value!r} is not one of {kind[:12]}"]
        if not isinstance(value, str):
            return [f"{name!r} = {value!r} should be a string choice"]
        return []
    if kind not in WIDGET_TYPES:
        return [f"{name!r} is a {kind} input but has the literal {value!r}"]
    expected = {"INT": int, "FLOAT": (int, float), "STRING": str, "BOOLEAN": bool}[kind]
    if isinstance(value, bool) and kind != "BOOLEAN" or not isinstance(value, expected):
        return [f"{name!r} = {value!r} is not a {kind}"]
    if kind in ("INT", "FLOAT"):
        low, high = options.get("min"), options.get("max")
        if low is not None and value < low or high is not None and value > high:
            return [f"{name!r} = {value!r} outside [{low}, {high}]"]
    return []
