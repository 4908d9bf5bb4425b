"""Reading a worker's local state from its workdir (for `streamkit tables`)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamkit.app import App
from streamkit.state.task_tables import store_path


@dataclass
class LocalPartition:
    table: str
    partition: int
    keys: int
    path: Path


@contextlib.contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        yield db
    finally:
        db.close()


def local_partitions(app: App) -> list[LocalPartition]:
    found = []
    for stage in app.stages:
        for table in stage.tables:
            folder = store_path(app.settings.workdir, app.id, stage, 0).parent
            for path in sorted(folder.glob("*.sqlite")):
                with _connect(path) as db:
                    (keys,) = db.execute(f'SELECT count(*) FROM "t:{table.name}"').fetchone()
                found.append(LocalPartition(table.name, int(path.stem), keys, path))
    return sorted(found, key=lambda p: (p.table, p.partition))


def read_key(app: App, table_name: str, key: Any) -> tuple[int, Any] | None:
    """(partition, value) of `key` in the local stores, or None."""
    table = app.tables[table_name]
    encoded = table.key_codec.encode(key)
    for part in local_partitions(app):
        if part.table != table_name:
            continue
        with _connect(part.path) as db:
            row = db.execute(f'SELECT v FROM "t:{table_name}" WHERE k = ?', (encoded,)).fetchone()
        if row is not None:
            value = table.value_codec.decode(row[0])
            return part.partition, value if table.ttl is None else value[1]  # unstamped
    return None


def read_all(app: App, table_name: str) -> dict[Any, Any]:
    table = app.tables[table_name]
    values = {}
    for part in local_partitions(app):
        if part.table == table_name:
            with _connect(part.path) as db:
                for k, v in db.execute(f'SELECT k, v FROM "t:{table_name}"'):
                    value = table.value_codec.decode(v)
                    values[table.key_codec.decode(k)] = value if table.ttl is None else value[1]
    return values
