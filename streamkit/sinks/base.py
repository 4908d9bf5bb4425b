"""What every sink declaration and writer share: the guarantee, micro-batching, rows.

A sink writes the values of a declared stream to something other than a Kafka topic
(`stream.to(sk.PostgresSink(...))`). The declaration (`PostgresSink`, `SqliteSink`,
`JsonLinesSink`) is plain data, checked when it is made; at run time each task of the stage
opens a `Writer` from it (`runtime/sinks.py` drives it). Two modes:

- `exactly_once` (the default): each batch of rows is written in one transaction of the
  destination together with the next offset of every input partition of the task; a task
  resumes after the offsets stored there, so a replay writes nothing twice.
- `upsert` (SQL sinks, with `key=` columns): `INSERT ... ON CONFLICT (key) DO UPDATE`, no
  offsets stored: at-least-once delivery whose replays overwrite the same rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeGuard

import orjson

from streamkit.settings import ConfigError

Mode = Literal["exactly_once", "upsert"]
Coordinates = tuple[str, int]  # (topic, partition) of one input of a task
# per input partition a batch moves: (the stored offset this task read or wrote last, or
# None when there was none; the offset after the batch)
Moves = Mapping[Coordinates, tuple[int | None, int]]

GUARANTEES: dict[str, str] = {
    "exactly_once": "exactly-once (rows and input offsets in one transaction)",
    "upsert": "at-least-once, idempotent upsert",
}

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SinkFenced(Exception):
    """Another writer moved this sink's stored offsets since this task read them: the
    partition belongs to another task now (this worker was a zombie). Nothing of the batch
    is written; the worker stops, and its partitions' owners go on from the stored offsets."""


class SinkUnavailable(Exception):
    """The destination cannot be reached now (connection lost, server restarting, locked):
    the batch is retried with backoff, the stage waits meanwhile."""


class Writer(Protocol):
    """One task's connection to a sink's destination (`Sink.writer`)."""

    async def open(self) -> None:
        """Connect and create what the sink needs (its offsets table, the user's DDL)."""

    async def stored(self, inputs: Sequence[Coordinates]) -> dict[Coordinates, int]:
        """The next offset to write of each of `inputs`, as the destination has it."""

    async def write(
        self, rows: Sequence[Any], offsets: Moves, records: Sequence[Any]
    ) -> list[tuple[int, str]]:
        """Write `rows` and move the stored offsets in one transaction, each only from the
        value this task expects (else `SinkFenced`, nothing written); the rows the destination
        refused (their index in `rows` and its error) are left out, kept in
        `streamkit_sink_refused` with their source record's coordinates (`records[i]`), and
        returned."""

    async def reset(self) -> None:
        """After SinkUnavailable: drop the connection; the next call connects anew."""

    def close(self) -> None: ...


class Sink(Protocol):
    """A sink declaration: what `stream.to()` accepts besides a topic."""

    name: str
    mode: Mode
    batch_rows: int
    batch_seconds: float | None

    @property
    def label(self) -> str: ...

    @property
    def guarantee(self) -> str: ...

    def row(self, value: Any) -> Any:
        """A value as the writer's row (checked when appended: a value that is no row goes
        to the dead-letter topic like any error of the stage)."""

    def check(self, postgres_dsn: str | None) -> None:
        """Fail at start (ConfigError) when the sink cannot run as configured."""

    def writer(self, app_id: str, task: str, postgres_dsn: str | None) -> Writer: ...


def is_sink(target: Any) -> TypeGuard[Sink]:
    return all(hasattr(target, a) for a in ("writer", "row", "guarantee", "batch_rows"))


def check_batching(kind: str, batch_rows: int, batch_seconds: float | None) -> None:
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise ConfigError(f"{kind}: batch_rows must be a whole number >= 1, got {batch_rows!r}")
    if batch_seconds is not None and not batch_seconds > 0:
        raise ConfigError(f"{kind}: batch_seconds must be > 0 or None, got {batch_seconds!r}")


class SqlDeclaration(Protocol):
    """The fields an SQL sink's declaration (`PostgresSink`, `SqliteSink`) is made of."""

    table: str
    columns: Sequence[str]
    key: Sequence[str]
    mode: Mode
    name: str
    batch_rows: int
    batch_seconds: float | None


def declare_sql(kind: str, sink: SqlDeclaration) -> Columns:
    """Check an SQL sink's declaration when it is made (columns, key, mode, batching); name
    it after its table unless named; its columns."""
    cols = Columns.declare(kind, sink.table, sink.columns, sink.key, sink.mode)
    check_batching(f"{kind}({sink.table})", sink.batch_rows, sink.batch_seconds)
    sink.name = sink.name or sink.table
    return cols


@dataclass(frozen=True)
class Columns:
    """The columns of a SQL sink and how a value becomes a row (a tuple in their order): a
    mapping by key, anything else (a pydantic model, a dataclass) by attribute."""

    names: tuple[str, ...]
    key: tuple[str, ...]
    mode: Mode

    @classmethod
    def declare(
        cls, kind: str, table: str, columns: Sequence[str], key: Sequence[str], mode: str
    ) -> Columns:
        if mode not in GUARANTEES:
            raise ConfigError(f"{kind}({table}): mode must be one of {sorted(GUARANTEES)}")
        names, keys = tuple(columns), tuple(key)
        if not names or isinstance(columns, str):
            raise ConfigError(f"{kind}({table}): columns= needs a list of column names")
        for name in (*names, *table.split(".")):
            if not _NAME.match(name):
                raise ConfigError(f"{kind}({table}): {name!r} is not a plain SQL identifier")
        if mode == "upsert" and not keys:
            raise ConfigError(f"{kind}({table}): mode='upsert' needs key=[primary key columns]")
        if missing := [k for k in keys if k not in names]:
            raise ConfigError(f"{kind}({table}): key columns {missing} are not in columns=")
        return cls(names, keys, mode)  # type: ignore[arg-type]

    def getter(self) -> Callable[[Any], tuple[Any, ...]]:
        names = self.names

        def row(value: Any) -> tuple[Any, ...]:
            if isinstance(value, Mapping):
                return tuple(value[n] for n in names)
            return tuple(getattr(value, n) for n in names)

        return row

    def insert(self, table: str, param: Callable[[int], str]) -> str:
        """INSERT of one row (placeholders by `param(i)`), an upsert on the key in that mode."""
        cols = ", ".join(self.names)
        values = ", ".join(param(i + 1) for i in range(len(self.names)))
        sql = f"INSERT INTO {table} ({cols}) VALUES ({values})"
        if self.mode == "upsert":
            rest = [n for n in self.names if n not in self.key]
            update = (
                "DO UPDATE SET " + ", ".join(f"{n} = excluded.{n}" for n in rest)
                if rest
                else "DO NOTHING"
            )
            sql += f" ON CONFLICT ({', '.join(self.key)}) {update}"
        return sql


OFFSETS_TABLE = "streamkit_sink_offsets"
OFFSETS_DDL = (
    f"CREATE TABLE IF NOT EXISTS {OFFSETS_TABLE} (sink TEXT NOT NULL, topic TEXT NOT NULL, "
    "partition INTEGER NOT NULL, next_offset BIGINT NOT NULL, PRIMARY KEY (sink, topic, partition))"
)


REFUSED_TABLE = "streamkit_sink_refused"
REFUSED_DDL = (
    f"CREATE TABLE IF NOT EXISTS {REFUSED_TABLE} (sink TEXT NOT NULL, topic TEXT NOT NULL, "
    "partition INTEGER NOT NULL, record_offset BIGINT NOT NULL, error TEXT NOT NULL, "
    "row_json TEXT NOT NULL)"
)


def refused_insert(param: Callable[[int], str]) -> str:
    values = ", ".join(param(i) for i in range(1, 7))
    return (
        f"INSERT INTO {REFUSED_TABLE} (sink, topic, partition, record_offset, error, row_json) "
        f"VALUES ({values})"
    )


def refused_rows(
    sink: str, rows: Sequence[Any], records: Sequence[Any], refused: list[tuple[int, str]]
) -> list[tuple[Any, ...]]:
    """The `streamkit_sink_refused` rows of the refused ones: where each came from, why, and
    the row itself as JSON (anything JSON cannot say as text)."""
    return [
        (
            sink,
            records[i].topic,
            records[i].partition,
            records[i].offset,
            error,
            orjson.dumps(rows[i], default=str).decode(),
        )
        for i, error in refused
    ]


def offsets_moves(param: Callable[[int], str]) -> tuple[str, str]:
    """The statements that move one stored offset, fenced: the first offset of a partition
    (parameters: sink, topic, partition, offset) is inserted only if there is none; a later
    one (parameters: offset, sink, topic, partition, expected) only over the expected one.
    Each must change exactly one row."""
    first = (
        f"INSERT INTO {OFFSETS_TABLE} (sink, topic, partition, next_offset) VALUES "
        f"({param(1)}, {param(2)}, {param(3)}, {param(4)}) ON CONFLICT (sink, topic, partition) "
        "DO NOTHING"
    )
    later = (
        f"UPDATE {OFFSETS_TABLE} SET next_offset = {param(1)} WHERE sink = {param(2)} "
        f"AND topic = {param(3)} AND partition = {param(4)} AND next_offset = {param(5)}"
    )
    return first, later


def offset_moves(key: str, offsets: Moves) -> list[tuple[bool, tuple[Any, ...]]]:
    """(first?, parameters) of each move, for `offsets_moves`' two statements."""
    return [
        (True, (key, t, p, after)) if before is None else (False, (after, key, t, p, before))
        for (t, p), (before, after) in offsets.items()
    ]


def fenced(key: str, params: tuple[Any, ...]) -> SinkFenced:
    return SinkFenced(
        f"sink {key}: another writer moved the stored offset of {params[1:4]} since this task "
        "read it (the partition belongs to another task now): nothing of this batch written"
    )
