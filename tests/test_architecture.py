"""The package's structure: no import cycles, no hidden imports, __all__ everywhere, a small API.

The layering itself (who may import whom) is checked by import-linter in `make lint`
(contracts in pyproject.toml); these tests cover what its contracts do not.
"""

from __future__ import annotations

import ast
import importlib
import pathlib
import subprocess
import sys

import grimp
import pytest

import gradhealth

SRC = pathlib.Path(gradhealth.__file__).parent
MODULES = sorted(
    ".".join(("gradhealth", *p.relative_to(SRC).with_suffix("").parts)).removesuffix(".__init__")
    for p in SRC.rglob("*.py")
)


def _strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """Tarjan's algorithm over gradhealth's own modules: every component of size > 1 is a cycle."""
    own = sorted(m for m in graph.modules if m.startswith("gradhealth"))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if not w.startswith("gradhealth"):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in own:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    graph = grimp.build_graph("gradhealth")
    assert _strongly_connected(graph) == []


def test_cycle_finder_finds_a_cycle():
    # The reference above must be able to fail: two modules importing each other are a cycle.
    graph = grimp.ImportGraph()
    for m in ("gradhealth.a", "gradhealth.b", "gradhealth.c"):
        graph.add_module(m)
    graph.add_import(importer="gradhealth.a", imported="gradhealth.b")
    graph.add_import(importer="gradhealth.b", imported="gradhealth.a")
    graph.add_import(importer="gradhealth.b", imported="gradhealth.c")
    assert _strongly_connected(graph) == [{"gradhealth.a", "gradhealth.b"}]


def _function_imports(path: pathlib.Path) -> list[tuple[int, str, str]]:
    lines = path.read_text().splitlines()
    found = []
    for node in ast.walk(ast.parse("\n".join(lines))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                if isinstance(sub, ast.Import):
                    found.append((sub.lineno, sub.names[0].name, lines[sub.lineno - 1]))
                elif isinstance(sub, ast.ImportFrom):
                    found.append((sub.lineno, sub.module or "", lines[sub.lineno - 1]))
    return found


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_imports_inside_functions_are_lazy_heavy_dependencies_with_a_reason(path):
    for lineno, module, line in _function_imports(path):
        assert not module.startswith("gradhealth"), (
            f"{path.name}:{lineno} imports {module} inside a function; fix the layering instead")
        assert "# lazy" in line, (
            f"{path.name}:{lineno} imports {module} inside a function without a '# lazy: why' note")


@pytest.mark.parametrize("name", [m for m in MODULES if "._" not in m and not m.endswith("__main__")])
def test_every_public_module_declares_all(name):
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names {missing}, which it does not define"


def test_top_level_api_is_small_and_importing_it_leaves_the_course_alone():
    assert len(gradhealth.__all__) <= 25
    code = ("import sys, gradhealth; "
            "print(sorted(m for m in sys.modules if m.startswith('gradhealth.course')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_readme_api_table_lists_every_top_level_name():
    readme = (SRC.parents[1] / "README.md").read_text()
    missing = [n for n in gradhealth.__all__ if f"`{n}" not in readme and f"gh.{n}" not in readme]
    assert not missing, f"README does not mention {missing}"
