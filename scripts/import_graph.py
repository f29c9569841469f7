"""The import graph of ``anodiff`` and ``nodes``, from the source (nothing is imported or run).

``python scripts/import_graph.py`` prints the part-level graph as a Mermaid diagram (the picture in
docs/architecture.md); ``--check`` exits 1 and names the offenders when a part imports a part in a cycle or
``anodiff/model`` imports anything of anodiff outside itself. ``tests/test_architecture.py`` runs the same checks.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("anodiff", "nodes")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every module of the two packages that ``path`` imports, at the top or inside a function; ``from p import
    x`` counts as ``p.x`` when that is a module, else as ``p``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("dualanodiff_pack."):
                target = target.removeprefix("dualanodiff_pack.")
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in known else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def module_graph() -> dict[str, set[str]]:
    """module -> the modules of the two packages it imports (a name imported from a package counts as the package
    unless it is a submodule)."""
    known = modules()
    names = set(known)
    return {name: {t for t in imports_of(path, names) if t in names and t != name} for name, path in known.items()}


def part_of(module: str) -> str:
    """The architectural part: a subpackage (``anodiff.sd15``) or a top-level module (``anodiff.cli``); the
    package itself (its ``__init__``: the public names) is a part of its own."""
    bits = module.split(".")
    return ".".join(bits[:2])


def part_graph(modules: dict[str, set[str]] | None = None) -> dict[str, set[str]]:
    """The module graph (``module_graph()`` unless given) with each module replaced by its part."""
    graph: dict[str, set[str]] = defaultdict(set)
    for module, targets in (modules if modules is not None else module_graph()).items():
        graph[part_of(module)].update(part_of(t) for t in targets if part_of(t) != part_of(module))
    return dict(graph)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one node (Tarjan's algorithm, iterative depth-first search)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def model_leaks(graph: dict[str, set[str]]) -> list[str]:
    """Arrows from ``anodiff.model`` to any other part of anodiff."""
    return sorted(f"anodiff.model -> {t}" for t in graph.get("anodiff.model", ()) if t.startswith("anodiff"))


def mermaid(graph: dict[str, set[str]]) -> str:
    lines = ["```mermaid", "flowchart TD"]
    for part in sorted(graph):
        for target in sorted(graph[part]):
            lines.append(f"    {part.replace('.', '_')}[{part}] --> {target.replace('.', '_')}[{target}]")
    lines.append("```")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 on part or module cycles, or a model/ leak")
    args = parser.parse_args(argv)
    modules = module_graph()
    parts = part_graph(modules)
    if not args.check:
        print(mermaid(parts))
        return 0
    problems = [" -> ".join(c) for c in cycles(parts)] + [" <-> ".join(c) for c in cycles(modules)]
    problems += model_leaks(parts)
    for problem in problems:
        print(f"import problem: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
