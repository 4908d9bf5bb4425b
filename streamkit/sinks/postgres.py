"""PostgresSink: rows into a PostgreSQL table through asyncpg, exactly-once or upsert.

Why asyncpg (not psycopg 3): it speaks PostgreSQL's binary protocol itself, on asyncio, with
no libpq to install; `executemany` sends a whole batch in one pipelined round trip, and its
errors carry the server's SQLSTATE, which is how a refused row (classes 22, 23) is told from
a lost connection (08, 57) without parsing messages.

The write of one batch (`PostgresWriter.write`), exactly-once mode:

1. `BEGIN`; insert every row of the batch (`executemany`).
2. If the server refused one (SQLSTATE class 22 data exception, 23 integrity violation, or a
   value asyncpg cannot encode for its column): roll back, and insert the rows again one by
   one, each under a savepoint; the refused rows go to `streamkit_sink_refused` (their
   source coordinates, the server's error, the row as JSON) and are released with the error.
3. Move the next offset of every input partition the batch covers in
   `streamkit_sink_offsets` (sink, topic, partition), in the same transaction, and only from
   the value this task read or wrote last: a row changed by another writer (this worker is a
   zombie, its partition taken over) fails the batch with `SinkFenced`, nothing written.
4. `COMMIT`: rows and offsets are durable together, or neither is.

A task opens its writer before it takes a record, reads the stored offsets, and skips the
sink's rows of every record before them (`runtime/sinks.py`). A connection lost during 1-4
raises `SinkUnavailable`: the batch is retried on a new connection, after re-reading the
stored offsets (a COMMIT whose answer was lost is not written twice).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from streamkit.settings import ConfigError
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

CONNECT_TIMEOUT = 10.0
_REFUSED = ("22", "23")  # data exception, integrity constraint violation
_UNAVAILABLE = ("08", "53", "57")  # connection, insufficient resources, operator intervention
_RETRY = ("40001", "40P01")  # serialization failure, deadlock


def _param(i: int) -> str:
    return f"${i}"


def refused(exc: BaseException) -> bool:
    """The row's own fault: the table refuses it, the others may go in."""
    if isinstance(exc, asyncpg.PostgresError):
        return str(exc.sqlstate)[:2] in _REFUSED
    return isinstance(exc, ValueError)  # a value asyncpg cannot encode for its column


def unavailable(exc: BaseException) -> bool:
    """The server, not the row: retry later on a new connection."""
    if isinstance(exc, asyncpg.PostgresError):
        state = str(exc.sqlstate)
        return state[:2] in _UNAVAILABLE or state in _RETRY
    # InternalClientError: the protocol out of step after a connection broke mid-operation
    return isinstance(
        exc, (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.InternalClientError)
    )


def _raise_if_lost(exc: Exception, conn: asyncpg.Connection | None) -> None:
    """SinkUnavailable when the server is the cause, or the connection is gone (an error
    raised after it broke, e.g. by the rollback on it, says nothing more)."""
    if unavailable(exc) or (conn is not None and conn.is_closed()):
        raise SinkUnavailable(f"PostgreSQL: {type(exc).__name__}: {exc}") from exc


@dataclass(eq=False)
class PostgresSink:
    """`stream.to(sk.PostgresSink("orders", columns=["id", "amount"]))`.

    `dsn`: the server (`postgresql://user@host:port/db`); unset, the `postgres_dsn` setting
    (`STREAMKIT_POSTGRES_DSN`). `create`: SQL run once per connection before writing (e.g.
    `CREATE TABLE IF NOT EXISTS ...`). `mode="upsert"` with `key=[...]` writes
    `ON CONFLICT (key) DO UPDATE` and stores no offsets. A batch is written at every
    checkpoint, and sooner once `batch_rows` rows or `batch_seconds` seconds are pending."""

    table: str
    columns: Sequence[str]
    key: Sequence[str] = ()
    mode: Mode = "exactly_once"
    dsn: str | None = None
    create: str | None = None
    name: str = ""
    batch_rows: int = 1000
    batch_seconds: float | None = None
    _cols: Columns = field(init=False, repr=False)
    _row: Callable[[Any], tuple[Any, ...]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._cols = declare_sql("PostgresSink", self)
        self._row = self._cols.getter()

    @property
    def label(self) -> str:
        return f"postgres {self.table}"

    @property
    def guarantee(self) -> str:
        return GUARANTEES[self.mode]

    def row(self, value: Any) -> Any:
        return self._row(value)

    def check(self, postgres_dsn: str | None) -> None:
        if not (self.dsn or postgres_dsn):
            raise ConfigError(
                f"PostgresSink({self.table}) has no server: pass dsn= or set "
                "STREAMKIT_POSTGRES_DSN (postgresql://user@host:port/database)"
            )

    def writer(self, app_id: str, task: str, postgres_dsn: str | None) -> PostgresWriter:
        self.check(postgres_dsn)
        dsn = self.dsn or postgres_dsn
        assert dsn is not None
        return PostgresWriter(self, self._cols, dsn, f"{app_id}:{self.name}")


class PostgresWriter:
    def __init__(self, sink: PostgresSink, cols: Columns, dsn: str, key: str) -> None:
        self._sink = sink
        self._dsn = dsn
        self._key = key  # this sink's rows of streamkit_sink_offsets
        self._insert = cols.insert(sink.table, _param)
        self._first, self._later = offsets_moves(_param)
        self._refused = refused_insert(_param)
        self._conn: asyncpg.Connection | None = None

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        try:
            conn = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT)
            async with conn.transaction():  # tasks open at once: one DDL at a time
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", OFFSETS_TABLE)
                await conn.execute(OFFSETS_DDL)
                await conn.execute(REFUSED_DDL)
                if self._sink.create:
                    await conn.execute(self._sink.create)
        except Exception as exc:
            _raise_if_lost(exc, None)
            raise
        self._conn = conn
        return conn

    async def open(self) -> None:
        await self._connection()

    async def stored(self, inputs: Sequence[Coordinates]) -> dict[Coordinates, int]:
        try:
            conn = await self._connection()
            rows = await conn.fetch(
                f"SELECT topic, partition, next_offset FROM {OFFSETS_TABLE} WHERE sink = $1",
                self._key,
            )
        except SinkUnavailable:
            raise
        except Exception as exc:
            _raise_if_lost(exc, self._conn)
            raise
        wanted = set(inputs)
        found = {(r["topic"], r["partition"]): int(r["next_offset"]) for r in rows}
        return {c: o for c, o in found.items() if c in wanted}

    async def write(
        self, rows: Sequence[Any], offsets: Moves, records: Sequence[Any]
    ) -> list[tuple[int, str]]:
        try:
            conn = await self._connection()
            try:
                async with conn.transaction():
                    await conn.executemany(self._insert, rows)
                    await self._store(conn, offsets)
                return []
            except Exception as exc:
                if not refused(exc):
                    raise
            return await self._one_by_one(conn, rows, offsets, records)
        except SinkUnavailable:
            raise
        except Exception as exc:
            _raise_if_lost(exc, self._conn)
            raise

    async def _one_by_one(
        self,
        conn: asyncpg.Connection,
        rows: Sequence[Any],
        offsets: Moves,
        records: Sequence[Any],
    ) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        async with conn.transaction():
            for i, row in enumerate(rows):
                try:
                    async with conn.transaction():  # a savepoint
                        await conn.execute(self._insert, *row)
                except Exception as exc:
                    if not refused(exc):
                        raise
                    out.append((i, f"{type(exc).__name__}: {exc}"))
            await conn.executemany(self._refused, refused_rows(self._key, rows, records, out))
            await self._store(conn, offsets)
        return out

    async def _store(self, conn: asyncpg.Connection, offsets: Moves) -> None:
        for first, params in offset_moves(self._key, offsets):
            status = await conn.execute(self._first if first else self._later, *params)
            if not status.endswith(" 1"):  # "INSERT 0 1", "UPDATE 1"
                raise fenced(self._key, params)  # the transaction rolls back

    async def reset(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()
