"""A table's per-access calls in C when built (`_tables.c`), and their Python references.

`TableAccess` is the base class of `Table` (`table.py`). Compiled, it is the C type whose
slots do `t[k]` and `t[k] = v` for a key cached in the running task's partition, and call
`Table._getitem` / `_setitem` / `_delitem` (the reference, in Python) for everything else;
`Table` then leaves `__getitem__`, `__setitem__` and `__delitem__` to those slots. Without a
compiler, or with STREAMKIT_PURE_PYTHON=1, it is the plain class below and `Table`'s
`__getitem__` & co. are its Python methods: same answers, same side effects (the partition's
hits, its dirty keys), the same errors (`tests/test_table_access.py`).

`forget_rows(cache, dirty, start, keys)`: a closed window's rows `(start, key)` popped from a
partition's cache and dirty keys (`TablePartition.forget_window`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any


class PyTableAccess:
    """The pure-Python base: the attributes the C type holds, nothing else."""

    name: str
    ttl: Any
    source: bool


def py_forget_rows(
    cache: dict[Any, Any], dirty: dict[Any, Any], start: Any, keys: Iterable[Any]
) -> None:
    """The reference of `_tables.forget_rows`."""
    for key in keys:
        row = (start, key)
        cache.pop(row, None)
        dirty.pop(row, None)


try:
    from streamkit.state import _tables

    NATIVE = os.environ.get("STREAMKIT_PURE_PYTHON", "") in ("", "0")
except ImportError:  # no compiler at install: the Python path
    NATIVE = False

if TYPE_CHECKING:
    TableAccess = PyTableAccess
else:
    TableAccess = _tables.TableAccess if NATIVE else PyTableAccess
forget_rows = _tables.forget_rows if NATIVE else py_forget_rows


def configure(
    current_task: ContextVar[Any], missing: Any, deleted: Any, immutable: frozenset[type]
) -> None:
    """Tell the C type the context variable, the cache's two markers and the immutable
    types (once, from `table.py`)."""
    if NATIVE:
        _tables.configure(current_task, missing, deleted, immutable)
