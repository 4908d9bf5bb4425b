"""Sinks beyond Kafka without a server: the SQLite and JSON-lines sinks driven by the testing
kit (the runtime's own tasks and checkpoints), the declarations' errors, the topology, and the
sink steps read the same in the code and in docs/architecture.md. (PostgreSQL and real
processes: tests/test_sinks_postgres.py; the demo's sink under kill -9:
tests/test_ecommerce_demo.py.)"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

import streamkit as sk
from streamkit.runtime import sinks as runtime_sinks
from streamkit.sinks.base import SinkFenced
from streamkit.sinks.jsonlines import committed_lines, read_offsets
from streamkit.testing import TestDriver

DDL = (
    "CREATE TABLE IF NOT EXISTS orders (id INTEGER NOT NULL, amount INTEGER NOT NULL "
    "CHECK (amount >= 0))"
)


def app_with(*sinks: Any, partitions: int = 2, **settings: Any) -> tuple[sk.App, sk.Topic]:
    app = sk.App("sinks", **settings)
    orders = app.topic("orders", partitions=partitions)
    for sink in sinks:
        app.stream(orders).to(sink)
    return app, orders


def rows(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return sorted(db.execute("SELECT id, amount FROM orders").fetchall())


def test_sqlite_rows_and_offsets_commit_together_and_a_restart_writes_nothing_twice(
    tmp_path: Path,
) -> None:
    db = tmp_path / "out.sqlite"
    sink = sk.SqliteSink(db, "orders", columns=["id", "amount"], create=DDL, batch_rows=3)
    app, orders = app_with(sink)
    with TestDriver(app) as t:
        for i in range(10):
            t.send(orders, {"id": i, "amount": i}, key=str(i))
        # batches of 3 went in as the rows came, with the offsets they reach; the rest is
        # pending until the checkpoint
        written = rows(db)
        assert 0 < len(written) < 10
        t.checkpoint()
        assert rows(db) == [(i, i) for i in range(10)]
        with sqlite3.connect(db) as conn:
            stored = dict(conn.execute("SELECT partition, next_offset FROM streamkit_sink_offsets"))
        assert stored == {p: o for p, o in t.committed(orders).items()}
        # the group forgets its last commit: every record is read again; the sink skips
        # those before its stored offsets, so nothing is written twice
        t.driver.group.offsets.clear()
        t.restart()
        t.send(orders, {"id": 10, "amount": 10}, key="10")
        t.checkpoint()
    assert rows(db) == [(i, i) for i in range(11)]


def test_batch_seconds_writes_a_batch_once_that_much_processing_time_passed(
    tmp_path: Path,
) -> None:
    db = tmp_path / "out.sqlite"
    sink = sk.SqliteSink(db, "orders", columns=["id", "amount"], create=DDL, batch_seconds=5)
    app, orders = app_with(sink, partitions=1, commit_interval=60)  # no checkpoint meanwhile
    with TestDriver(app) as t:
        t.send(orders, {"id": 0, "amount": 0}, key="0")
        t.advance_time(1)
        t.send(orders, {"id": 1, "amount": 1}, key="1")
        assert rows(db) == []  # 1000 rows or 5 s: neither yet (and no checkpoint)
        t.advance_time(4.5)
        t.send(orders, {"id": 2, "amount": 2}, key="2")  # checked at a record boundary
        assert rows(db) == [(0, 0), (1, 1), (2, 2)]


def test_a_row_sqlite_refuses_goes_to_the_dead_letter_topic_and_the_others_go_in(
    tmp_path: Path,
) -> None:
    db = tmp_path / "out.sqlite"
    app, orders = app_with(sk.SqliteSink(db, "orders", columns=["id", "amount"], create=DDL))
    with TestDriver(app) as t:
        for i in range(6):
            t.send(orders, {"id": i, "amount": -1 if i == 3 else i}, key=str(i))
        t.send(orders, {"id": 7}, key="7")  # no amount: not a row at all
        t.send(orders, {"id": 8, "amount": {"cents": 8}}, key="8")  # SQLite cannot bind it
        t.checkpoint()
        dead = t.read(app.dlq)
    assert rows(db) == [(i, i) for i in range(6) if i != 3]
    with sqlite3.connect(db) as conn:  # kept by the destination too, where it came from
        kept = conn.execute(
            "SELECT topic, record_offset, error, row_json FROM streamkit_sink_refused"
        ).fetchall()
    kept_by_id = {orjson.loads(r)[0]: (topic, at, error) for topic, at, error, r in kept}
    assert sorted(kept_by_id) == [3, 8]
    assert "CHECK constraint failed" in kept_by_id[3][2]
    by_id = {orjson.loads(d.raw_value or b"null")["id"]: d.error for d in dead}
    assert set(by_id) == {3, 7, 8}
    assert "Error binding parameter" in by_id[8]["streamkit.error"]
    assert by_id[3]["streamkit.error.type"] == "SinkRefused"
    assert "CHECK constraint failed" in by_id[3]["streamkit.error"]
    assert by_id[3]["streamkit.source.topic"] == "orders"
    assert by_id[7]["streamkit.error.type"] == "KeyError"
    for i in (3, 8):  # the same coordinates in the table and the dead letter
        assert kept_by_id[i][0] == by_id[i]["streamkit.source.topic"]
        assert str(kept_by_id[i][1]) == by_id[i]["streamkit.source.offset"]


def test_sqlite_upsert_mode_keeps_one_row_per_key(tmp_path: Path) -> None:
    db = tmp_path / "out.sqlite"
    ddl = "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, amount INTEGER)"
    sink = sk.SqliteSink(
        db, "orders", columns=["id", "amount"], key=["id"], mode="upsert", create=ddl
    )
    app, orders = app_with(sink)
    with TestDriver(app) as t:
        for i in range(8):
            t.send(orders, {"id": i % 3, "amount": i}, key=str(i % 3))
        t.checkpoint()
    assert rows(db) == [(0, 6), (1, 7), (2, 5)]
    with sqlite3.connect(db) as conn:  # at-least-once: no offsets are stored
        assert conn.execute("SELECT count(*) FROM streamkit_sink_offsets").fetchone() == (0,)


def test_json_lines_cut_a_torn_batch_and_resume_after_their_offsets(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    app, orders = app_with(sk.JsonLinesSink(folder), partitions=1)
    with TestDriver(app) as t:
        for i in range(5):
            t.send(orders, {"id": i}, key=str(i))
        t.checkpoint()
        data = folder / "orders-0.jsonl"
        length, offsets = read_offsets(folder / "orders-0.offsets")
        assert length == data.stat().st_size
        assert offsets == {("orders", 0): 5}
        with data.open("ab") as f:  # a crash in the middle of the next batch
            f.write(b'{"id": 5}\n{"id"')
        t.driver.group.offsets.clear()
        t.restart()  # opens again: cuts the torn tail, skips offsets 0-4
        t.send(orders, {"id": 5}, key="5")
        t.checkpoint()
    lines = [orjson.loads(x) for x in data.read_bytes().splitlines()]
    assert lines == [{"id": i} for i in range(6)]


def test_an_agent_yields_rows_to_a_sink_and_to_a_topic_alike(tmp_path: Path) -> None:
    db = tmp_path / "out.sqlite"
    app = sk.App("agent-sinks")
    orders = app.topic("orders", partitions=2)
    flagged = app.topic("flagged", partitions=2)
    sink = sk.SqliteSink(db, "orders", columns=["id", "amount"], create=DDL)

    @app.agent(orders, sink=[flagged, sink])
    async def flag(stream: sk.Stream[Any]) -> AsyncIterator[Any]:
        async for order in stream:
            if order["id"] % 2:
                yield sk.Record(key="odd", value={**order, "amount": order["amount"] * 10})
            else:
                yield order

    assert "agent flag() -> flagged (2 partitions), sqlite out.sqlite:orders (exactly-once" in (
        app.topology()
    )
    with TestDriver(app) as t:
        for i in range(6):
            t.send(orders, {"id": i, "amount": i}, key=str(i))
        t.checkpoint()
        assert len(t.read(flagged)) == 6
    assert rows(db) == [(0, 0), (1, 10), (2, 2), (3, 30), (4, 4), (5, 50)]


def test_declarations_refuse_what_cannot_run() -> None:
    with pytest.raises(sk.ConfigError, match="key="):
        sk.PostgresSink("t", columns=["a"], mode="upsert")
    with pytest.raises(sk.ConfigError, match="not in columns"):
        sk.SqliteSink("x.db", "t", columns=["a"], key=["b"], mode="upsert")
    with pytest.raises(sk.ConfigError, match="identifier"):
        sk.PostgresSink("t; drop table x", columns=["a"])
    with pytest.raises(sk.ConfigError, match="batch_rows"):
        sk.JsonLinesSink("out", batch_rows=0)
    app = sk.App("twice")
    src = app.topic("src")
    app.stream(src).to(sk.SqliteSink("a.db", "t", columns=["a"]))
    app.stream(src).to(sk.SqliteSink("b.db", "t", columns=["a"]))  # another file
    with pytest.raises(sk.ConfigError, match=r"two sinks write to sqlite a\.db:t named 't'"):
        app.stream(src).to(sk.SqliteSink("a.db", "t", columns=["a"]))


def test_a_postgres_sink_without_a_server_fails_at_start_saying_what_to_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STREAMKIT_POSTGRES_DSN", raising=False)
    app, _ = app_with(sk.PostgresSink("orders", columns=["id"]))
    with pytest.raises(sk.ConfigError, match="STREAMKIT_POSTGRES_DSN"), TestDriver(app):
        pass


def test_the_topology_states_each_sinks_guarantee(tmp_path: Path) -> None:
    app, _ = app_with(
        sk.PostgresSink("orders", columns=["id"], dsn="postgresql://x@127.0.0.1/db"),
        sk.SqliteSink(tmp_path / "o.db", "latest", columns=["id"], key=["id"], mode="upsert"),
        sk.JsonLinesSink(tmp_path / "lines"),
    )
    text = app.topology()
    assert "to(postgres orders, exactly-once (rows and input offsets in one transaction))" in text
    assert "to(sqlite o.db:latest, at-least-once, idempotent upsert)" in text
    assert f"to(json-lines {tmp_path / 'lines'}, exactly-once" in text


def _steps(text: str) -> str:
    start = text.index("1. **Open**")
    return " ".join(text[start : text.index("next owner.", start)].split())


def test_the_sink_steps_read_the_same_in_the_code_and_in_the_docs() -> None:
    docs = (Path(__file__).resolve().parent.parent / "docs" / "architecture.md").read_text()
    assert runtime_sinks.__doc__ is not None
    assert _steps(runtime_sinks.__doc__) == _steps(docs)


async def fence_two_writers(sink: Any) -> None:
    """Two writers of one task's sink (a zombie and the partition's new owner): each batch
    moves the stored offset only from the value its writer expects, so the one that did not
    see the other's write is refused and writes nothing."""
    at = SimpleNamespace(topic="orders", partition=0, offset=0)
    owner, zombie = (sink.writer("fence", "orders-0", None) for _ in range(2))
    await owner.open()
    await zombie.open()
    refused = await owner.write(
        [sink.row({"id": 1, "amount": 1})], {("orders", 0): (None, 1)}, [at]
    )
    assert refused == []
    with pytest.raises(SinkFenced, match="another"):
        await zombie.write([sink.row({"id": 1, "amount": 1})], {("orders", 0): (None, 1)}, [at])
    assert not await owner.write([sink.row({"id": 2, "amount": 2})], {("orders", 0): (1, 2)}, [at])
    with pytest.raises(SinkFenced, match="another"):
        await zombie.write([sink.row({"id": 2, "amount": 2})], {("orders", 0): (1, 2)}, [at])
    owner.close()
    zombie.close()


def test_a_zombie_writer_is_fenced_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "out.sqlite"
    asyncio.run(
        fence_two_writers(sk.SqliteSink(db, "orders", columns=["id", "amount"], create=DDL))
    )
    assert rows(db) == [(1, 1), (2, 2)]


def test_a_zombie_writer_is_fenced_json_lines(tmp_path: Path) -> None:
    asyncio.run(fence_two_writers(sk.JsonLinesSink(tmp_path / "out")))
    lines = list(committed_lines(tmp_path / "out"))
    assert [orjson.loads(x) for x in lines] == [{"id": 1, "amount": 1}, {"id": 2, "amount": 2}]
