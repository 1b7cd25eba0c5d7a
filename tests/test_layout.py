"""The layering of labkit (its __init__ docstring): every module imports only from lower layers,
no import cycle, no private name taken from another module, the environment read in one module."""
import ast
from pathlib import Path

import pytest

import labkit

PACKAGE = Path(labkit.__file__).parent
LEAF_IMPORTS = {"checks", "settings"}   # the labkit modules a leaf may import (they import none)


def module_names():
    return sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def labkit_imports(source: str, module: str) -> list[tuple[str, str | None]]:
    """(imported labkit module, imported name or None) for every import in ``source``, at any depth
    (inside functions too). ``from . import x`` and ``from labkit import x`` import module x."""
    names = set(module_names())
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 0 and not (base == "labkit" or base.startswith("labkit.")):
                continue
            if node.level > 1:
                raise AssertionError(f"{module}: import beyond the package ({'.' * node.level}{base})")
            base = base.removeprefix("labkit").lstrip(".") if node.level == 0 else base
            for alias in node.names:
                if not base:
                    if alias.name in names:
                        found.append((alias.name, None))
                else:
                    found.append((base.split(".")[0], alias.name))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("labkit."):
                    found.append((alias.name.split(".")[1], None))
    return found


def graph(read=lambda m: (PACKAGE / f"{m}.py").read_text(encoding="utf-8")):
    return {m: labkit_imports(read(m), m) for m in module_names()}


def layer_of():
    return {m: i for i, layer in enumerate(labkit.LAYERS) for m in layer}


def test_every_module_has_a_layer_and_every_layer_entry_exists():
    assert sorted(layer_of()) == module_names()


def test_imports_go_downward_only():
    layers = layer_of()
    bad = [f"{m} (layer {layers[m]}) imports {dep} (layer {layers[dep]})"
           for m, deps in graph().items() for dep, _ in deps
           if dep != m and not (layers[dep] < layers[m] or (layers[m] == 0 and dep in LEAF_IMPORTS and m not in LEAF_IMPORTS))]
    assert not bad, bad


def find_cycle(edges: dict[str, set[str]]):
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for dep in sorted(edges.get(m, ())):
            if state.get(dep) == "open":
                return stack[stack.index(dep):] + [dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(edges):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_no_import_cycle():
    edges = {m: {dep for dep, _ in deps if dep != m} for m, deps in graph().items()}
    assert find_cycle(edges) is None


def test_no_private_name_crosses_modules():
    bad = [f"{m} imports {dep}.{name}" for m, deps in graph().items() for dep, name in deps
           if name and name.startswith("_") and dep != m]
    assert not bad, bad


def environment_reads(source: str) -> list[str]:
    """Every ``os.environ`` / ``os.getenv`` / ``os.putenv`` in ``source`` (any spelling of the import)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "putenv"):
            found.append(node.attr)
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [a.name for a in node.names if a.name in ("environ", "getenv", "putenv")]
    return found


def test_only_settings_reads_the_environment():
    readers = [m for m in module_names() if environment_reads((PACKAGE / f"{m}.py").read_text(encoding="utf-8"))]
    assert readers == ["settings"]


def private_attributes(source: str) -> list[str]:
    """``module._name`` where ``module`` is a labkit module imported in ``source``."""
    modules = {alias.asname or alias.name for node in ast.walk(ast.parse(source))
               if isinstance(node, ast.ImportFrom) and (node.level == 1 and not node.module or node.module == "labkit")
               for alias in node.names}
    return [f"{node.value.id}.{node.attr}" for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id in modules and node.attr.startswith("_") and not node.attr.startswith("__")]


def test_no_private_attribute_of_another_module_is_used():
    bad = {m: found for m in module_names() if (found := private_attributes((PACKAGE / f"{m}.py").read_text(encoding="utf-8")))}
    assert not bad, bad


@pytest.mark.parametrize("source, expected", [
    ("import os\nx = os.environ.get('LABKIT_X')", ["environ"]),
    ("import os\nx = os.getenv('LABKIT_X')", ["getenv"]),
    ("from os import getenv\nx = getenv('A')", ["getenv"]),
    ("import os\nx = os.path.join('a')", []),
])
def test_environment_reads_are_found(source, expected):
    assert environment_reads(source) == expected


def test_private_attributes_are_found():
    assert private_attributes("from . import prune\ndef f(m):\n    return prune._mask_of(m)") == ["prune._mask_of"]
    assert private_attributes("from . import prune\nx = prune.Mask\ny = self._z") == []


# --- the checks themselves catch what they are for ---------------------------------------------------

def test_a_back_edge_is_found():
    sources = {m: (PACKAGE / f"{m}.py").read_text(encoding="utf-8") for m in module_names()}
    sources["tables"] += "\n\ndef _late():\n    from .report import seeds_table\n"
    g = graph(read=sources.__getitem__)
    edges = {m: {dep for dep, _ in deps if dep != m} for m, deps in g.items()}
    assert ("report", "seeds_table") in g["tables"]
    assert find_cycle(edges) is not None


@pytest.mark.parametrize("line, expected", [
    ("from .prune import _layers", [("prune", "_layers")]),
    ("from labkit.prune import Mask", [("prune", "Mask")]),
    ("from . import models, quant", [("models", None), ("quant", None)]),
    ("import labkit.data", [("data", None)]),
    ("def f():\n    from .train import _progress", [("train", "_progress")]),
    ("import numpy as np\nfrom torch import nn", []),
])
def test_imports_are_read(line, expected):
    assert labkit_imports(line, "x") == expected


def test_cycle_finder():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
