"""The package's layers, read from the source (no broker): state/ imports nothing from
runtime/, aiokafka's internals are imported by one module only, and that module imports
nothing from streamkit; the recovery steps read the same in the code and the docs."""

from __future__ import annotations

import ast
from pathlib import Path

import streamkit as sk

PACKAGE = Path(sk.__file__).parent
INTERNALS = ("aiokafka.client", "aiokafka.protocol", "aiokafka.record", "aiokafka.conn")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path) -> set[str]:
    """The modules `path` imports when it runs (at module level or in a function), leaving
    out `if TYPE_CHECKING:` blocks (read by type checkers only)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for other in node.orelse:
                visit(other)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def modules() -> dict[str, Path]:
    return {
        str(path.relative_to(PACKAGE.parent).with_suffix("")).replace("/", "."): path
        for path in PACKAGE.rglob("*.py")
    }


def test_state_imports_nothing_from_runtime() -> None:
    offenders = {
        name: sorted(m for m in imports(path) if m.startswith("streamkit.runtime"))
        for name, path in modules().items()
        if name.startswith("streamkit.state.")
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_aiokafka_internals_live_in_one_module() -> None:
    users = {
        name
        for name, path in modules().items()
        if any(m == i or m.startswith(i + ".") for m in imports(path) for i in INTERNALS)
    }
    assert users == {"streamkit.aiokafka_internals"}
    own = imports(modules()["streamkit.aiokafka_internals"])
    assert not [m for m in own if m.startswith("streamkit")]


def _steps(text: str) -> str:
    start = text.index("1. **Open.**")
    return text[start : text.index("committed offset.", start)]


def test_the_recovery_steps_read_the_same_in_the_code_and_in_the_docs() -> None:
    from streamkit.state import changelog

    docs = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    assert changelog.__doc__ is not None
    assert _steps(changelog.__doc__) == _steps(docs)
