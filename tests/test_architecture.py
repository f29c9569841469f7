"""The layout described in docs/architecture.md holds: no import cycles, the model imports nothing above it,
small modules with a docstring and short functions (never shortened by telling the formatter to skip lines), and no
import hook."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 300
MAX_FUNCTION_LINES = 80
PYTHON_DIRS = ("anodiff", "nodes", "scripts", "bench", "tests")


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


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``file:function (n lines)`` for every function or method of ``path`` longer than ``limit`` lines, from its
    ``def`` (decorators apart) to its last line, as ``ruff format`` lays it out."""
    tree = ast.parse(path.read_text())
    return [
        f"{path.relative_to(ROOT)}:{node.name} ({n} lines)"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and (n := node.end_lineno - node.lineno + 1) > limit
    ]


def test_functions_are_at_most_80_lines():
    long = [found for p in _sources() for found in long_functions(p)]
    assert long == [], f"functions over {MAX_FUNCTION_LINES} lines: split them into named helpers"


def test_the_function_length_check_finds_a_long_function(tmp_path, monkeypatch):
    monkeypatch.setitem(long_functions.__globals__, "ROOT", tmp_path)
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "m.py").write_text(f"def short():\n    return 1\n\n\ndef long():\n{body}\n")
    assert long_functions(tmp_path / "m.py") == [f"m.py:long ({MAX_FUNCTION_LINES + 1} lines)"]


def test_no_source_file_skips_the_formatter():
    files = [ROOT / "install.py", ROOT / "__init__.py"]
    files += [p for d in PYTHON_DIRS for p in (ROOT / d).rglob("*.py") if ".venv" not in p.parts]
    marker = "fmt: " + "skip"  # split, so this file does not match itself
    skipping = [str(p.relative_to(ROOT)) for p in files if p.is_file() and marker in p.read_text()]
    assert skipping == [], f"'{marker}' in {skipping}: split the module or the line instead"


def test_the_architecture_picture_is_the_code():
    text = (ROOT / "docs" / "architecture.md").read_text()
    assert _script().mermaid(_script().part_graph()) in text, (
        "docs/architecture.md's diagram is stale: paste the output of `python scripts/import_graph.py`"
    )


def test_importing_the_library_and_the_pack_installs_no_import_hook():
    """README: nothing is patched globally. The old flat paths (``anodiff.processor``...) are gone, with the finder
    that served them: importing ``anodiff`` and the node pack leaves ``sys.meta_path`` as it was."""
    code = (
        "import sys; before = list(sys.meta_path); import anodiff, anodiff.cli; sys.path.insert(0, {root!r});"
        "import importlib.util as u; s = u.spec_from_file_location('pack', {init!r}, "
        "submodule_search_locations=[{root!r}]);"
        "m = u.module_from_spec(s); sys.modules['pack'] = m; s.loader.exec_module(m);"
        "added = [type(f).__name__ for f in sys.meta_path if f not in before]; print(added); assert added == [], added"
    ).format(root=str(ROOT), init=str(ROOT / "__init__.py"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("anodiff.processor")


def test_the_pack_keeps_its_subpackages_reachable_by_name():
    """``nodes/__init__`` imports node modules under their own names: ``nodes.train`` and ``nodes.dataset`` stay
    the subpackages (a ``from .train import train`` would rebind ``nodes.train`` to the module inside it)."""
    code = (
        "import sys, importlib.util as u; sys.path.insert(0, {root!r});"
        "s = u.spec_from_file_location('pack', {init!r}, submodule_search_locations=[{root!r}]);"
        "m = u.module_from_spec(s); sys.modules['pack'] = m; s.loader.exec_module(m);"
        "bad = [n for n in ('train', 'dataset', 'model', 'regions', 'sampling', 'graft') "
        "if not hasattr(getattr(m.nodes, n), '__path__')];"
        "assert bad == [], bad"
    ).format(root=str(ROOT), init=str(ROOT / "__init__.py"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_root_init_imports_alone_as_pytest_does_in_any_checkout_folder():
    """Under a folder whose name is not a Python name (``ComfyUI-DualAnoDiff``) pytest imports the root
    ``__init__.py`` as a lone module; it must not fail there (the nodes load only inside a package)."""
    namespace = runpy.run_path(str(ROOT / "__init__.py"), run_name="ComfyUI-DualAnoDiff")  # no parent package
    assert namespace["WEB_DIRECTORY"] == "./web" and "NODE_CLASS_MAPPINGS" not in namespace
