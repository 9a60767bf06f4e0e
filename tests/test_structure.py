"""The package's import structure: no module imports its importer, even inside a function or under
`TYPE_CHECKING`, and every import points down the layers that DESIGN.md states."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "impure"

# Lowest first; a module may import from its own layer or below. The root package (the public API) and the
# command line sit on top.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("impure._util", "impure.formatting", "impure.data", "impure.device", "impure.metrics",
     "impure.hub_files"),  # base helpers
    ("impure.config", "impure.model"),  # the network
    ("impure.hub", "impure.cards"),  # Hub I/O and model cards
    ("impure.classifier", "impure.export"),  # PurifiedClassifier, and its export
    ("impure.attacks", "impure.classifiers", "impure.defences"),  # attacks, classifiers, defences by name
    ("impure.evaluation", "impure.training", "impure.baselines", "impure.tiling", "impure.losses",
     "impure.mixing"),  # and the old import paths of modules that moved (deprecated aliases)
    ("impure.cli", "impure.app", "impure.demo", "impure.__main__", "impure"),
)


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["impure", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module of the package that `name` imports, at any indentation."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from package import module` imports the module; `from module import name` the module.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        found.update(target for target in targets if target in modules and target != name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(name: str) -> int:
    for index, layer in enumerate(LAYERS):
        if any(name == prefix or name.startswith(prefix + ".") for prefix in layer if prefix != "impure"):
            return index
    if name == "impure":
        return len(LAYERS) - 1
    raise AssertionError(f"{name} is in no layer of tests/test_structure.py: add it where DESIGN.md puts it")


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import loop as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_no_module_imports_its_importer():
    graph = _graph()
    assert len(graph) > 60 and graph["impure.hub"] >= {"impure.model.purifier", "impure.cards"}  # it sees them
    loop = _cycle(graph)
    assert loop is None, "import loop: " + " -> ".join(loop or [])


def test_every_import_points_down_the_layers():
    wrong = [f"{name} (layer {_layer(name)}) imports {target} (layer {_layer(target)})"
             for name, targets in sorted(_graph().items()) for target in sorted(targets)
             if _layer(target) > _layer(name)]
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_the_checks_see_a_loop_and_an_upward_import(tmp_path):
    graph = {"impure.a": {"impure.b"}, "impure.b": {"impure.c"}, "impure.c": {"impure.a"}}
    assert _cycle(graph) == ["impure.a", "impure.b", "impure.c", "impure.a"]
    assert _cycle({"impure.a": {"impure.b"}, "impure.b": set()}) is None
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from .hub import Purifier\n    from impure.evaluation import report\n")
    modules = {"impure.x": source, "impure.hub": source, "impure.evaluation": source,
               "impure.evaluation.report": source}
    assert _imports("impure.x", source, modules) == {"impure.hub", "impure.evaluation.report"}
    assert _layer("impure.model.purifier") < _layer("impure.hub") < _layer("impure.evaluation.report")
    with pytest.raises(AssertionError, match="in no layer"):
        _layer("impure.unplaced")
