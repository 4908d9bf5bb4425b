"""SqliteSink: rows into a table of a local SQLite file, exactly-once or upsert.

The embedded default: no server. The write of one batch (`SqliteWriter.write`, in a thread:
SQLite blocks), exactly-once mode:

1. `BEGIN IMMEDIATE` (the file's write lock, waiting up to `busy_timeout` for another
   writer, another worker's task perhaps); insert every row of the batch.
2. If SQLite refused one (a constraint, a type it cannot bind): roll back, and insert the
   rows again one by one, each under a savepoint; the refused rows go to
   `streamkit_sink_refused` and are released with SQLite's error.
3. Move the next offset of every input partition the batch covers in
   `streamkit_sink_offsets`, in the same transaction, only from the value this task read
   or wrote last (else `SinkFenced`: another writer took the partition, nothing written).
4. `COMMIT`.

A file still locked after `busy_timeout` raises `SinkUnavailable` (retried with backoff). The
file is local to the worker: exactly-once holds for the workers that share this disk.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamkit.sinks.base import (
    GUARANTEES,
    OFFSETS_DDL,
    OFFSETS_TABLE,
    REFUSED_DDL,
    Columns,
    Coordinates,
    Mode,
    Moves,
    SinkUnavailable,
    declare_sql,
    fenced,
    offset_moves,
    offsets_moves,
    refused_insert,
    refused_rows,
)

BUSY_TIMEOUT = 5.0


def _param(i: int) -> str:
    return "?"


def refused(exc: BaseException) -> bool:
    """The row's own fault: a constraint, or a value SQLite cannot bind (not a wrong number
    of columns, which is the sink's configuration)."""
    if isinstance(exc, (sqlite3.IntegrityError, sqlite3.InterfaceError, OverflowError)):
        return True
    return isinstance(exc, sqlite3.ProgrammingError) and "binding parameter" in str(exc)


@dataclass(eq=False)
class SqliteSink:
    """`stream.to(sk.SqliteSink("out.sqlite", "orders", columns=["id", "amount"]))`.

    `create`: SQL run once per connection before writing (`CREATE TABLE IF NOT EXISTS`).
    `mode="upsert"` with `key=[...]` writes `ON CONFLICT (key) DO UPDATE` (the key needs a
    unique index) and stores no offsets."""

    path: str | Path
    table: str
    columns: Sequence[str]
    key: Sequence[str] = ()
    mode: Mode = "exactly_once"
    create: str | None = None
    name: str = ""
    batch_rows: int = 1000
    batch_seconds: float | None = None
    _cols: Columns = field(init=False, repr=False)
    _row: Callable[[Any], tuple[Any, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._cols = declare_sql("SqliteSink", self)
        self._row = self._cols.getter()

    @property
    def label(self) -> str:
        return f"sqlite {Path(self.path).name}:{self.table}"

    @property
    def guarantee(self) -> str:
        return GUARANTEES[self.mode]

    def row(self, value: Any) -> Any:
        return self._row(value)

    def check(self, postgres_dsn: str | None) -> None:
        return None

    def writer(self, app_id: str, task: str, postgres_dsn: str | None) -> SqliteWriter:
        return SqliteWriter(self, self._cols, f"{app_id}:{self.name}")


class SqliteWriter:
    def __init__(self, sink: SqliteSink, cols: Columns, key: str) -> None:
        self._sink = sink
        self._key = key
        self._insert = cols.insert(sink.table, _param)
        self._first, self._later = offsets_moves(_param)
        self._refused = refused_insert(_param)
        self._db: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        path = Path(self._sink.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(
            path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False
        )
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("BEGIN IMMEDIATE")
            db.execute(OFFSETS_DDL)
            db.execute(REFUSED_DDL)
            if self._sink.create:
                db.execute(self._sink.create)
            db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            db.close()
            raise SinkUnavailable(f"SQLite {path}: {exc}") from exc
        self._db = db
        return db

    async def open(self) -> None:
        await asyncio.to_thread(self._connection)

    async def stored(self, inputs: Sequence[Coordinates]) -> dict[Coordinates, int]:
        def read() -> dict[Coordinates, int]:
            rows = self._connection().execute(
                f"SELECT topic, partition, next_offset FROM {OFFSETS_TABLE} WHERE sink = ?",
                (self._key,),
            )
            wanted = set(inputs)
            return {(t, p): int(o) for t, p, o in rows if (t, p) in wanted}

        return await asyncio.to_thread(read)

    async def write(
        self, rows: Sequence[Any], offsets: Moves, records: Sequence[Any]
    ) -> list[tuple[int, str]]:
        return await asyncio.to_thread(self._write, rows, offsets, records)

    def _write(
        self, rows: Sequence[Any], offsets: Moves, records: Sequence[Any]
    ) -> list[tuple[int, str]]:
        db = self._connection()
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(self._insert, rows)
                out = []
            except Exception as exc:
                if not refused(exc):
                    raise
                db.execute("ROLLBACK")
                db.execute("BEGIN IMMEDIATE")
                out = self._one_by_one(db, rows)
                db.executemany(self._refused, refused_rows(self._key, rows, records, out))
            for first, params in offset_moves(self._key, offsets):
                if db.execute(self._first if first else self._later, params).rowcount != 1:
                    raise fenced(self._key, params)
            db.execute("COMMIT")
            return out
        except sqlite3.OperationalError as exc:  # locked, disk I/O: retried
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise SinkUnavailable(f"SQLite {self._sink.path}: {exc}") from exc
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _one_by_one(self, db: sqlite3.Connection, rows: Sequence[Any]) -> list[tuple[int, str]]:
        out = []
        for i, row in enumerate(rows):
            db.execute("SAVEPOINT row")
            try:
                db.execute(self._insert, row)
            except Exception as exc:
                if not refused(exc):
                    raise
                db.execute("ROLLBACK TO row")
                out.append((i, f"{type(exc).__name__}: {exc}"))
            db.execute("RELEASE row")
        return out

    async def reset(self) -> None:
        self.close()

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()
