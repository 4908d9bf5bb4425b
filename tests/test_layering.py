"""The package's layers, read from the source (no broker): the declarations and state/ import
nothing from runtime/, the package has no import cycle (counting every import, type-checking
ones too), aiokafka's internals are imported by one module only, and that module imports
nothing from streamkit; the recovery steps read the same in the code and the docs."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import streamkit as sk

PACKAGE = Path(sk.__file__).parent
INTERNALS = ("aiokafka.client", "aiokafka.protocol", "aiokafka.record", "aiokafka.conn")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path, *, typing_too: bool = False) -> set[str]:
    """The modules `path` imports when it runs (at module level or in a function), leaving
    out `if TYPE_CHECKING:` blocks (read by type checkers only) unless `typing_too`. A name
    imported from a package counts as its submodule when it is one."""
    found: set[str] = set()
    known = modules()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node) and not typing_too:
            for other in node.orelse:
                visit(other)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(
                f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known
            )
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


@functools.cache
def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = str(path.relative_to(PACKAGE.parent).with_suffix("")).replace("/", ".")
        found[name.removesuffix(".__init__")] = path
    return found


# The declaration layer: what an app module uses to declare its dataflow.
DECLARATIONS = (
    "streamkit.app",
    "streamkit.agents",
    "streamkit.streams",
    "streamkit.graph",
    "streamkit.topology",
    "streamkit.topics",
    "streamkit.windows",
    "streamkit.serde",
    "streamkit.events",
    "streamkit.eventtime",
    "streamkit.settings",
    "streamkit.context",
    "streamkit.keys",
    "streamkit.clients",
)


def test_state_and_the_declarations_import_nothing_from_runtime() -> None:
    offenders = {
        name: sorted(m for m in imports(path, typing_too=True) if m.startswith("streamkit.runtime"))
        for name, path in modules().items()
        if name.startswith("streamkit.state.") or name in DECLARATIONS
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def import_graph() -> dict[str, set[str]]:
    """Module → the package's modules it imports (every import, type-checking ones too)."""
    known = modules()
    return {
        name: {m for m in imports(path, typing_too=True) if m in known and m != name}
        - {"streamkit"}
        for name, path in known.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_one() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_aiokafka_internals_live_in_one_module() -> None:
    users = {
        name
        for name, path in modules().items()
        if any(m == i or m.startswith(i + ".") for m in imports(path) for i in INTERNALS)
    }
    package = "streamkit.aiokafka_internals"
    assert users and all(u.startswith(package + ".") for u in users), users
    for name, path in modules().items():
        if name.startswith(package):  # the package imports nothing else of streamkit
            assert not [
                m for m in imports(path) if m.startswith("streamkit") and not m.startswith(package)
            ]


def _steps(text: str) -> str:
    start = text.index("1. **Open.**")
    return text[start : text.index("committed offset.", start)]


def test_the_recovery_steps_read_the_same_in_the_code_and_in_the_docs() -> None:
    from streamkit.state import changelog

    docs = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    assert changelog.__doc__ is not None
    assert _steps(changelog.__doc__) == _steps(docs)


def test_the_assignment_steps_read_the_same_in_the_code_and_in_the_docs() -> None:
    from streamkit.runtime import positions

    def steps(text: str) -> str:
        start = text.index("1. Register the transactional producers")
        return text[start : text.index("commits nothing.", start)]

    docs = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    assert positions.__doc__ is not None
    assert steps(positions.__doc__) == steps(docs)
