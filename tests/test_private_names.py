"""No module of `sdeflow` or `nets` reaches into another module's private names.

A private module (`pkg/_name.py`) may be imported by the modules of its own package only, a
private name (`_name`) by no other module, and a private attribute is read on `self` (or `cls`)
only. Shared helpers live in public modules (`sdeflow.custom_types`, `sdeflow.checks`,
`sdeflow.samplers.keys`) or are public methods (`AbstractPrior.require_non_degenerate`).
"""

import ast
import pathlib

import pytest


ROOT = pathlib.Path(__file__).resolve().parents[1]
FILES = sorted(p for package in ("sdeflow", "nets") for p in (ROOT / package).rglob("*.py"))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _imported_module(path: pathlib.Path, node: ast.ImportFrom) -> tuple[str, ...]:
    """The dotted path of the module a `from ... import` names, from the repository root."""
    if node.level == 0:
        return tuple((node.module or "").split("."))
    package = path.relative_to(ROOT).parent.parts
    base = package[: len(package) - (node.level - 1)]
    return base + (tuple(node.module.split(".")) if node.module else ())


def violations(path: pathlib.Path) -> list[str]:
    package = path.relative_to(ROOT).parent.parts
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            module = _imported_module(path, node)
            if module[0] not in ("sdeflow", "nets"):
                continue
            for i, part in enumerate(module):
                if _private(part) and module[:i] != package:
                    found.append(f"line {node.lineno}: private module {'.'.join(module)}")
            found += [f"line {node.lineno}: private name {alias.name} from {'.'.join(module)}"
                      for alias in node.names if _private(alias.name)]
        elif isinstance(node, ast.Import):
            found += [f"line {node.lineno}: private module {alias.name}" for alias in node.names
                      if any(_private(p) for p in alias.name.split("."))
                      and alias.name.split(".")[0] in ("sdeflow", "nets")]
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                found.append(f"line {node.lineno}: private attribute {node.attr}")
    return found


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(ROOT)) for p in FILES])
def test_no_private_names_across_modules(path):
    assert violations(path) == []
