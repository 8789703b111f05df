"""The shape of the library: a module graph without cycles, every package import at the top of its module,
and every public helper naming the lecture that teaches it."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

PACKAGES = {"helpers": Path(__file__).resolve().parent.parent / "helpers",
            "benchmarks": Path(__file__).resolve().parent.parent / "benchmarks"}


def _modules(package: str) -> dict[str, Path]:
    return {f"{package}.{p.stem}" if p.stem != "__init__" else package: p
            for p in sorted(PACKAGES[package].glob("*.py"))}


def _imported_modules(module: str, node: ast.ImportFrom | ast.Import, package: str) -> list[str]:
    """The package modules an import statement names (``from . import a, b`` names two)."""
    known = set(_modules(package))
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == package]
    if node.level == 0:
        if not node.module or node.module.split(".")[0] != package:
            return []
        base = node.module
    else:
        parent = module if module == package else module.rsplit(".", 1)[0]
        base = ".".join([parent, *(node.module.split(".") if node.module else [])])
    names = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
    return names or [base]


def _graph(package: str) -> tuple[dict[str, set[str]], list[str]]:
    graph, local = {}, []
    for module, path in _modules(package).items():
        tree = ast.parse(path.read_text(), str(path))
        top = set()
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                top.update(_imported_modules(module, node, package))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)) and _imported_modules(module, inner, package):
                        local.append(f"{path.name}:{inner.lineno} in {node.name}()")
        graph[module] = {m for m in top if m != module and m != package}
    return graph, local


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_function_local_package_imports(package):
    _, local = _graph(package)
    assert not local, "package imports hidden inside functions (move them to the top): " + ", ".join(local)


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_module_graph_has_no_cycles(package):
    graph, _ = _graph(package)
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if state.get(nxt) is None:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_cycle_check_finds_a_cycle(tmp_path, monkeypatch):
    """The checker itself: two modules importing each other are reported."""
    pkg = tmp_path / "helpers"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("from . import a\n\ndef f():\n    from .a import y\n")
    monkeypatch.setitem(PACKAGES, "helpers", pkg)
    with pytest.raises(AssertionError, match="import cycle"):
        test_module_graph_has_no_cycles("helpers")
    with pytest.raises(AssertionError, match=r"b.py:4 in f\(\)"):
        test_no_function_local_package_imports("helpers")


LECTURE_WORDS = ("lecture", "lectures")
# Modules that serve the tooling around the lectures rather than a lecture (runner, CLI, file writing).
TOOLING = {"helpers", "helpers.__main__", "helpers.lectures"}


def test_every_public_helper_names_its_lecture():
    """d2l's habit: each public function and class says in its docstring which lecture teaches or uses it."""
    missing = []
    for module_name in _modules("helpers"):
        if module_name in TOOLING:
            continue
        module = importlib.import_module(module_name)
        module_doc = (module.__doc__ or "").lower()
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
                continue
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            doc = (inspect.getdoc(obj) or "").lower()
            if not any(word in doc for word in LECTURE_WORDS) and "not lecture material" not in module_doc:
                missing.append(f"{module_name}.{name}")
    assert not missing, "public helpers whose docstring names no lecture: " + ", ".join(missing)
