"""The library's import graph has no cycles, and command-line code lives in ``scripts/`` only.

The graph is read from the source with :mod:`ast`, so it sees every import: at module level and
inside functions, absolute and relative, ``import a.b`` and ``from a import b`` (``b`` a submodule
or a name in ``a``). An edge goes to the deepest module of the package the import names.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "sourcetracing"
CLI_HELPER = "sourcetracing.cli"  # the one library module that builds parsers (step_parser, run)


def modules(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of ``package`` under ``root``."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(tree: ast.AST, name: str, is_package: bool) -> set[str]:
    """Every dotted name the import statements of module ``name`` may load."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: strip level - 1 parts from the module's own package
                here = name.split(".") if is_package else name.split(".")[:-1]
                here = here[: len(here) - node.level + 1]
                base = ".".join(here + ([node.module] if node.module else []))
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in its source)."""
    mods = modules(root, package)
    graph = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        targets = set()
        for dotted in imported(tree, name, path.name == "__init__.py"):
            while dotted and dotted not in mods:  # `from a import f`: f is a name, a the module
                dotted = dotted.rpartition(".")[0]
            if dotted and dotted != name:
                targets.add(dotted)
        graph[name] = targets
    return graph


def components(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = {stack.pop()}
            while node not in component:
                component.add(stack.pop())
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def shortest_cycle(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A shortest closed chain ``[start, ..., start]`` (breadth first), None when there is none."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for succ in sorted(graph[node]):
                if succ == start:
                    return paths[node] + [start]
                if succ not in paths:
                    paths[succ] = paths[node] + [succ]
                    following.append(succ)
        frontier = following
    return None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Within each knot of mutually importing modules, a shortest cycle through each of its modules."""
    found: list[list[str]] = []
    for component in components(graph):
        inner = {node: graph[node] & component for node in component}
        for node in sorted(component):
            chain = shortest_cycle(inner, node)
            turn = chain.index(min(chain))
            chain = chain[turn:-1] + chain[:turn] + [min(chain)]  # start each cycle at its first module
            if chain not in found:
                found.append(chain)
    return found


def test_library_has_no_import_cycles():
    found = cycles(import_graph(SRC, PACKAGE))
    assert not found, "import cycles:\n" + "\n".join("  " + " -> ".join(chain) for chain in found)


def test_cycle_finder_finds_a_planted_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import os\n\n\ndef f():\n    from .sub import b\n    return b\n")
    (pkg / "sub" / "b.py").write_text("from pkg.c import g\n")
    (pkg / "c.py").write_text("import pkg.a\n\nfrom . import sub\n")
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.c"}
    assert graph["pkg.c"] == {"pkg.a", "pkg.sub"}
    assert cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]
    (pkg / "c.py").write_text("g = 1\n")
    assert cycles(import_graph(tmp_path, "pkg")) == []


def command_line_code(tree: ast.AST) -> list[str]:
    """``def main`` and ``argparse.ArgumentParser(...)`` calls in a module, with their lines."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "main":
            found.append(f"line {node.lineno}: def main(")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "ArgumentParser":
                found.append(f"line {node.lineno}: ArgumentParser(")
    return found


def test_command_line_code_is_in_scripts_only():
    offenders = [
        f"{path.relative_to(SRC)} {where}"
        for name, path in modules(SRC, PACKAGE).items()
        if name != CLI_HELPER
        for where in command_line_code(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert not offenders, "command-line code outside scripts/ (move it to its script):\n" + "\n".join(
        offenders
    )
