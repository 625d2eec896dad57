"""The import graph keeps the layer order docs/architecture.md states (parsed from it, not copied)."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "proxytool"


def layer_order() -> list[set[str]]:
    """The line after ``<!-- layer-order -->`` in docs/architecture.md: top layer first, ``→`` between
    layers, commas between siblings (which may not import each other)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    line = text.split("<!-- layer-order -->", 1)[1].strip().splitlines()[0].strip("` ")
    return [{name.strip() for name in layer.split(",")} for layer in line.split("→")]


def unit_of(module: str) -> str:
    """``proxytool.decoding.stepper`` -> ``decoding``; ``proxytool.errors`` -> ``errors``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "proxytool"


def imports() -> list[tuple[str, str, int, list[str]]]:
    """(importing module, imported module, line, names) for every proxytool import, lazy ones included."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("proxytool"):
                found.append((module, node.module, node.lineno, [a.name for a in node.names]))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("proxytool"):
                        found.append((module, alias.name, node.lineno, []))
    return found


def rank(unit: str, order: list[set[str]]) -> int:
    for i, layer in enumerate(order):
        if unit in layer:
            return i
    raise AssertionError(f"{unit} is in no layer of docs/architecture.md's layer order")


def test_every_unit_of_the_package_has_a_layer():
    order = layer_order()
    units = {unit_of(m) for m, *_ in imports()} | {unit_of(t) for _, t, *_ in imports()}
    for unit in units:
        rank(unit, order)


def violations(edges, order: list[set[str]]) -> list[str]:
    """Imports of a layer above the importer's, or of a sibling in the same layer."""
    wrong = []
    for module, target, line, _ in edges:
        here, there = unit_of(module), unit_of(target)
        if here != there and rank(there, order) <= rank(here, order):
            wrong.append(f"{module}:{line} imports {target}")
    return wrong


def test_no_module_imports_a_layer_above_it_or_a_sibling():
    wrong = violations(imports(), layer_order())
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_module_imports_another_modules_private_names():
    wrong = [
        f"{module}:{line} imports {name} from {target}"
        for module, target, line, names in imports()
        for name in names
        if re.match(r"_[^_]", name) and target != module
    ]
    assert not wrong, "\n".join(wrong)


def test_no_two_modules_import_each_other():
    edges = {}
    for module, target, *_ in imports():
        if target != module:
            edges.setdefault(module, set()).add(target)
    cycles = sorted(f"{a} <-> {b}" for a, targets in edges.items() for b in targets if a < b and a in edges.get(b, ()))
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_upward_and_sibling_imports():
    order = [{"cli"}, {"serving", "evaluation"}, {"decoding"}]
    edges = [
        ("proxytool.cli.decode", "proxytool.decoding.generate", 1, []),  # down: fine
        ("proxytool.decoding.generate", "proxytool.serving.app", 2, []),  # up
        ("proxytool.serving.app", "proxytool.evaluation.tasks", 3, []),  # sibling
        ("proxytool.decoding.a", "proxytool.decoding.b", 4, []),  # inside one unit: fine
    ]
    assert violations(edges, order) == [
        "proxytool.decoding.generate:2 imports proxytool.serving.app",
        "proxytool.serving.app:3 imports proxytool.evaluation.tasks",
    ]
