"""The data path's layering: transport adapters decode, call the data plane and encode; none
of them reaches into the repository or the control behind it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[2] / "service"
ADAPTERS = sorted([*SERVICE.glob("routes/*.py"), *SERVICE.glob("grpc/*.py")])
BEHIND_THE_PLANE = ("service.repository", "service.control", "service.models")
FORBIDDEN_ATTRIBUTES = {"repository", "control"}


@pytest.mark.parametrize("module", ADAPTERS, ids=lambda path: path.relative_to(SERVICE).as_posix())
def test_adapters_only_call_the_data_plane(module: Path) -> None:
    tree = ast.parse(module.read_text(), str(module))
    imports = [
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module is not None
    ] + [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    ]
    assert not [name for name in imports if name.startswith(BEHIND_THE_PLANE)]
    attributes = {
        node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
    } & FORBIDDEN_ATTRIBUTES
    assert not attributes, f"{module.name} reaches into {sorted(attributes)}"


def test_the_check_sees_every_adapter() -> None:
    names = {path.name for path in ADAPTERS}
    assert {"v2.py", "predictions.py", "operations.py", "servicer.py"} <= names
