"""The layout described in docs/architecture.md holds: no import cycles, the model imports nothing above it,
small modules with a docstring, and the library does not lean on its own old import paths."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 300


def _script():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _sources() -> list[Path]:
    return sorted(p for pkg in ("anodiff", "nodes") for p in (ROOT / pkg).rglob("*.py"))


def test_no_cycles_between_parts_or_modules_and_the_model_imports_nothing_above_it():
    graph = _script()
    modules = graph.module_graph()
    parts = graph.part_graph(modules)
    assert {"anodiff.model", "anodiff.sd15", "anodiff.train", "nodes.model"} <= set(parts), sorted(parts)
    assert graph.cycles(parts) == []
    assert graph.cycles(modules) == []
    assert graph.model_leaks(parts) == []
    assert graph.main(["--check"]) == 0


def test_the_cycle_finder_finds_a_cycle():
    graph = _script()
    assert graph.cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert graph.model_leaks({"anodiff.model": {"anodiff.sd15", "torch"}}) == ["anodiff.model -> anodiff.sd15"]


def test_modules_are_small_and_say_what_they_are_for():
    long = {str(p.relative_to(ROOT)): n for p in _sources() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"modules over {MAX_LINES} lines: split them by responsibility"
    missing = [str(p.relative_to(ROOT)) for p in _sources() if not ast.get_docstring(ast.parse(p.read_text()))]
    assert missing == [], "modules without a docstring"


def test_the_library_and_nodes_use_the_new_paths_themselves():
    """``anodiff.legacy`` is for users' old scripts; inside the project every import names the real module."""
    from anodiff.legacy import MOVED

    old = {f"anodiff.{name}" for name in MOVED}
    graph = _script()
    known = set(graph.modules()) | old
    offenders = []
    for path in _sources():
        if path.name == "legacy.py":
            continue
        for target in graph.imports_of(path, known):
            if target in old:
                offenders.append(f"{path.relative_to(ROOT)} imports {target}")
    assert offenders == []


def test_the_architecture_picture_is_the_code():
    text = (ROOT / "docs" / "architecture.md").read_text()
    assert _script().mermaid(_script().part_graph()) in text, (
        "docs/architecture.md's diagram is stale: paste the output of `python scripts/import_graph.py`"
    )
