"""A table's `t[k]`, `t[k] = v` and `del t[k]` in C (`state/_tables.c`, the slots of
`TableAccess`) against their Python methods, the reference (`Table._getitem`, `_setitem`,
`_delitem`): for any sequence of reads, writes, deletes, in-place changes, checkpoints and
evictions, on tables with and without a default, read from a topic, with a TTL, used from a
task or from outside one, both give the same values and errors and leave the partition the
same (cache, dirty keys, changes being flushed, hits and misses). And a closed window's rows
forgotten in C (`forget_rows`) as in Python."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamkit as sk
from streamkit.context import CURRENT_TASK
from streamkit.state import table_access
from streamkit.state.store import open_store
from streamkit.state.table import _DELETED, _MISSING, Table, TablePartition
from tests.test_ttl import Scope

KINDS = ["plain", "counts", "lists", "source", "ttl"]


def make_table(kind: str) -> Table[Any, Any]:
    app = sk.App(f"access-{kind}")
    if kind == "source":
        return Table("t", app.topic("rows"), source=True, default=int)
    if kind == "ttl":
        return app.table("t", default=int, ttl=60)
    default = {"plain": None, "counts": int, "lists": list}[kind]
    return app.table("t", default=default)


class World:
    """One table, one partition of it over its own SQLite store, one task scope."""

    def __init__(self, kind: str, folder: Path, compiled: bool) -> None:
        self.table = make_table(kind)
        self.store = open_store(folder / "0.sqlite", {"t": "1"}, ["t"])
        self.full = 0  # early checkpoints asked for (too many dirty keys)
        self.part = TablePartition(self.table, 0, self.store, 3, self._on_full, 1)
        if kind == "source":  # rows of its topic, a list among them (read: not dirty)
            self.part.apply_source([(b"a", b"[1]"), (b"b", b"2")], 0)
        self.scope = Scope()
        self.scope.tables["t"] = self.part
        self.compiled = compiled

    def run(self, op: str, key: Any, value: Any, in_task: bool) -> Any:
        """What the op returned or raised, as comparable data."""
        token = CURRENT_TASK.set(self.scope) if in_task else None  # type: ignore[arg-type]
        try:
            table = self.table
            if op == "get":
                return ("ok", table[key] if self.compiled else Table._getitem(table, key))
            if op == "set":
                if self.compiled:
                    table[key] = value
                else:
                    Table._setitem(table, key, value)
            elif op == "del":
                if self.compiled:
                    del table[key]
                else:
                    Table._delitem(table, key)
            elif op == "append":  # a value changed in place after a read
                got = table[key] if self.compiled else Table._getitem(table, key)
                if isinstance(got, list):
                    got.append(value)
            elif op == "checkpoint":
                self.part.take_dirty()
            elif op == "evict":
                self.part.max_entries = self.part._limit = 1
                self.part._bound()
                self.part.max_entries = self.part._limit = 3
            return ("ok", None)
        except Exception as exc:
            return ("raised", type(exc).__name__, str(exc))
        finally:
            if token is not None:
                CURRENT_TASK.reset(token)

    def _on_full(self) -> None:
        self.full += 1

    def state(self) -> Any:
        def plain(value: Any) -> Any:
            return "<missing>" if value is _MISSING else "<deleted>" if value is _DELETED else value

        part = self.part
        return (
            [(k, plain(v)) for k, v in part.cache.items()],
            [(k, plain(v)) for k, v in part.dirty.items()],
            dict(part.flushing),
            part.hits,
            part.misses,
            self.full,
        )


KEY = st.one_of(st.sampled_from(["a", "b", "c", "d", "e"]), st.just(["unhashable"]))
VALUE = st.one_of(st.integers(-3, 3), st.lists(st.integers(0, 3), max_size=2), st.none())


@settings(max_examples=120, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    ops=st.lists(
        st.tuples(
            st.sampled_from(["get", "get", "set", "set", "del", "append", "checkpoint", "evict"]),
            KEY,
            VALUE,
            st.sampled_from([True, True, True, True, False]),  # in a task (mostly) or not
        ),
        max_size=40,
    ),
)
def test_compiled_access_matches_the_python_methods(
    tmp_path_factory: pytest.TempPathFactory, kind: str, ops: list[tuple[str, Any, Any, bool]]
) -> None:
    folder = tmp_path_factory.mktemp("access")
    (folder / "c").mkdir()
    (folder / "py").mkdir()
    compiled, reference = World(kind, folder / "c", True), World(kind, folder / "py", False)
    try:
        for op, key, value, in_task in ops:
            got = compiled.run(op, key, _copy(value), in_task)  # each world its own list
            expected = reference.run(op, key, _copy(value), in_task)
            assert got == expected, (op, key, value, in_task)
            assert compiled.state() == reference.state(), (op, key, value, in_task)
    finally:
        compiled.store.close()
        reference.store.close()


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def test_compiled_slots_serve_table_subscripts() -> None:
    """Built, `Table` leaves `t[k]` & co. to the C type's slots (a `__getitem__` of its own
    would put Python back in front of them); not built, its Python methods are them."""
    if table_access.NATIVE:
        for name in ("__getitem__", "__setitem__", "__delitem__"):
            assert name not in Table.__dict__
            assert getattr(Table, name) is getattr(table_access.TableAccess, name)
    else:
        assert Table.__dict__["__getitem__"] is Table.__dict__["_getitem"]


@settings(max_examples=100, deadline=None)
@given(
    rows=st.dictionaries(
        st.tuples(st.integers(0, 3), st.sampled_from("abcdef")), st.integers(), max_size=12
    ),
    dirty_keys=st.sets(st.tuples(st.integers(0, 3), st.sampled_from("abcdef")), max_size=6),
    start=st.integers(0, 3),
    keys=st.lists(st.sampled_from("abcdefg"), max_size=8),
)
def test_forget_rows_matches_the_python_reference(
    rows: dict[tuple[int, str], int],
    dirty_keys: set[tuple[int, str]],
    start: int,
    keys: list[str],
) -> None:
    caches = [dict(rows), dict(rows)]
    dirties = [{k: 0 for k in dirty_keys}, {k: 0 for k in dirty_keys}]
    table_access.forget_rows(caches[0], dirties[0], start, keys)
    table_access.py_forget_rows(caches[1], dirties[1], start, keys)
    assert caches[0] == caches[1] and dirties[0] == dirties[1]
    gone = {(start, k) for k in keys}
    assert not gone & set(caches[0]) and not gone & set(dirties[0])
    assert {k: v for k, v in rows.items() if k not in gone} == caches[0]
