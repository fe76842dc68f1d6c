"""The import picture of docs/architecture.md: every package imports only packages of a lower layer (or its own),
so there is no cycle and no lower layer reaches up into a higher one. Read from the source with ``ast`` (imports
inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: lowest first; a package may import packages of an earlier row (packages of one row are siblings: neither imports
#: the other)
LAYERS: tuple[tuple[str, ...], ...] = (
    ("base_lib", "configs"),
    ("sde_lib",),
    ("data_lib", "models"),
    ("samplers",),
    ("sample_quality",),
    ("train_lib",),
    ("jobs",),
)
RANK = {package: rank for rank, row in enumerate(LAYERS) for package in row}


def imported_packages(path: Path) -> set[str]:
    """Top-level toolkit packages named by the absolute imports of one file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & set(RANK)


@pytest.mark.parametrize("package", [p for row in LAYERS for p in row])
def test_package_imports_only_lower_layers(package):
    offending = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for imported in imported_packages(path):
            if imported != package and RANK[imported] >= RANK[package]:
                offending.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert not offending, "imports from the same or a higher layer:\n" + "\n".join(offending)


def test_every_package_is_placed_in_a_layer():
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "benchmarks", "examples"}
    assert packages <= set(RANK), f"packages missing from LAYERS: {sorted(packages - set(RANK))}"
