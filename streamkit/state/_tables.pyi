# A table's per-access calls in C (_tables.c); table_access.py holds their Python references.
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any

class TableAccess:
    name: str
    ttl: Any
    source: bool

def forget_rows(
    cache: dict[Any, Any], dirty: dict[Any, Any], start: Any, keys: Iterable[Any], /
) -> None: ...
def configure(
    current_task: ContextVar[Any], missing: Any, deleted: Any, immutable: frozenset[type], /
) -> None: ...
