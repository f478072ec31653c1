"""The package's shape: imports point only down the layer picture, modules and functions stay small.

Layers, top to bottom (docs/architecture.md):

    cli, dev → worker · quality · evaluation → stream / decision · accuracy → policy
      → inference → schemas · config · errors · metrics (and topics, stream-level)

A module may import its own package and any package in a lower layer. Packages on one
layer do not import each other (worker, quality and evaluation are independent services;
stream knows nothing of decisions, decision nothing of Kafka).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "streamproc"

#: Package (first name under streamproc) → layer; higher may import lower.
LAYERS: dict[str, int] = {
    "schemas": 0,
    "config": 0,
    "errors": 0,
    "metrics": 0,
    "inference": 1,
    "kafka_security": 1,  # every Kafka client's TLS/SASL options
    "policy": 2,
    "decision": 3,
    "accuracy": 3,
    "stream": 3,
    "topics": 3,
    "worker": 4,
    "quality": 4,
    "evaluation": 4,
    "dev": 5,
    "cli": 6,
    "__main__": 7,
}
#: Imports allowed inside the foundation layer (the error tree and the wire types are used
#: by settings and metrics).
FOUNDATION_EDGES = {("config", "errors"), ("metrics", "schemas"), ("schemas", "errors")}

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _package_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0] if parts[0] != "__init__" else "__init__"


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name.split(".")[1] for name in names if name.startswith("streamproc.")}


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_point_down(path: Path) -> None:
    own = _package_of(path)
    if own == "__init__":  # the package root re-exports the public API
        return
    assert own in LAYERS, f"{own} is missing from the layer table"
    for target in _imported_packages(path) - {own}:
        assert target in LAYERS, f"{path.name} imports streamproc.{target}, which has no layer"
        if LAYERS[own] == LAYERS[target] == 0 and (own, target) in FOUNDATION_EDGES:
            continue
        assert LAYERS[target] < LAYERS[own], (
            f"streamproc.{own} ({path.relative_to(PACKAGE)}) imports streamproc.{target}: "
            f"layer {LAYERS[own]} may only import lower layers, not layer {LAYERS[target]}"
        )


def test_the_layer_rule_catches_an_upward_import(tmp_path: Path) -> None:
    offending = tmp_path / "bad.py"
    offending.write_text("from streamproc.worker import Processor\nimport streamproc.stream.pipeline\n")
    assert _imported_packages(offending) == {"worker", "stream"}


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_and_function_sizes(path: Path) -> None:
    source = path.read_text()
    lines = source.count("\n")
    assert lines <= MAX_MODULE_LINES, f"{path.name} has {lines} lines; split it by responsibility"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            assert length <= MAX_FUNCTION_LINES, (
                f"{path.name}:{node.lineno} {node.name} has {length} lines (at most {MAX_FUNCTION_LINES})"
            )
