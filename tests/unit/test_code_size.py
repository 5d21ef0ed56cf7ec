"""Product code stays in small rooms: no module over 400 lines, no class over 250, no function over 60.

Migrations are left out: a migration is one long, generated function by nature.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT_PACKAGES = ("shared", "ingress", "workers", "ops", "simulator")
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 250
MAX_FUNCTION_LINES = 60


def _modules() -> list[Path]:
    return sorted(path for package in PRODUCT_PACKAGES for path in (ROOT / package).rglob("*.py"))


def oversized(source: str, name: str) -> list[str]:
    """What in one module's source is over its size, as `name:line what (N lines)`."""
    found = []
    lines = len(source.splitlines())
    if lines > MAX_MODULE_LINES:
        found.append(f"{name} ({lines} lines)")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            size = (node.end_lineno or node.lineno) - first + 1
            if size > limit:
                found.append(f"{name}:{node.lineno} {node.name} ({size} lines)")
    return found


def test_the_checker_finds_what_is_too_big() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    source = f"def small():\n    return 1\n\n\ndef big():\n{body}\n"
    assert oversized(source, "probe.py") == [f"probe.py:5 big ({MAX_FUNCTION_LINES + 1} lines)"]
    long_module = "x = 1\n" * (MAX_MODULE_LINES + 1)
    assert oversized(long_module, "long.py") == [f"long.py ({MAX_MODULE_LINES + 1} lines)"]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_product_code_stays_small(path: Path) -> None:
    assert oversized(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT))) == []
