"""streamkit.testing: the examples of docs/testing.md run as written (each is a test with
hand-computed answers), the kit's event-time and exchange behaviour on multi-partition
topics, and one small app run both by the kit and by a worker on the real broker, with every
output compared."""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import streamkit as sk
from streamkit.testing import AsyncTestDriver, DriverFailed, TestDriver

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "docs" / "testing.md", ROOT / "README.md"]
T0 = 1_704_067_200  # 2024-01-01T00:00:00Z


def doc_examples() -> dict[str, str]:
    """The python blocks of docs/testing.md (and the README) that define tests, by their
    first test's name."""
    text = "".join(doc.read_text() for doc in DOCS)
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    found = {}
    for block in blocks:
        names = re.findall(r"^(?:async )?def (test_\w+)", block, flags=re.MULTILINE)
        if names:
            found[names[0]] = block
    return found


def test_the_doc_has_the_examples_the_brief_asks_for() -> None:
    assert set(doc_examples()) == {
        "test_big_orders_are_flagged",
        "test_big_orders_get_a_flag",  # the README's
        "test_running_totals_per_user",
        "test_a_minute_closes_after_its_allowed_lateness",
        "test_reminders_and_surveys",
        "test_bad_input_goes_to_the_dead_letter_topic",
        "test_big_orders_in_one_fetch",
    }


@pytest.mark.parametrize("name", sorted(doc_examples()))
def test_doc_example(name: str) -> None:
    """Run one block of docs/testing.md or the README: every test function it defines."""
    namespace: dict[str, Any] = {"__name__": f"docs_testing_{name}"}
    exec(compile(doc_examples()[name], f"docs/testing.md:{name}", "exec"), namespace)
    tests = [fn for key, fn in namespace.items() if key.startswith("test_") and callable(fn)]
    assert tests
    for fn in tests:
        if inspect.iscoroutinefunction(fn):
            asyncio.run(fn())
        else:
            fn()


# -- exchanges and watermarks on multi-partition topics ------------------------------------------


def test_key_by_sends_each_key_where_a_java_producer_would() -> None:
    # Kafka's own murmur2 test vectors (UtilsTest.testMurmur2): a key's partition among n is
    # toPositive(hash) % n in the Java client.
    java_hash = {"21": -973932308, "foobar": -790332482, "abc": 479470107}
    app = sk.App("kit-keys")
    words = app.topic("words", partitions=2)
    seen = app.table("seen", default=int)

    by_word = app.stream(words).key_by(lambda w: w, partitions=7)

    @app.agent(by_word, state=[seen])
    async def count(stream: sk.Stream[str]) -> None:
        async for word in stream:
            seen[word] += 1

    with TestDriver(app) as driver:
        for word in java_hash:
            driver.send(words, word)
        hops = driver.records("kit-keys-words-key_by-repartition")
        expected = {w: (h & 0x7FFFFFFF) % 7 for w, h in java_hash.items()}
        assert {r.key: r.partition for r in hops} == expected
        assert {w: driver.table("seen").partition_of(w) for w in java_hash} == expected


def test_rebalance_deals_round_robin_per_producing_task() -> None:
    app = sk.App("kit-deal")
    cards = app.topic("cards", partitions=1)
    dealt = app.topic("dealt", partitions=3)

    @app.agent(app.stream(cards).rebalance(partitions=3), sink=dealt)
    async def deal(stream: sk.Stream[int]) -> AsyncIterator[int]:
        async for card in stream:
            yield card * 10

    with TestDriver(app) as driver:
        driver.send_many(cards, range(7))
        hops = driver.records("kit-deal-cards-rebalance-repartition")
        assert sorted((r.value, r.partition) for r in hops) == [
            (0, 0), (1, 1), (2, 2), (3, 0), (4, 1), (5, 2), (6, 0)
        ]  # fmt: skip
        assert sorted(driver.read_values(dealt)) == [0, 10, 20, 30, 40, 50, 60]


def test_a_seeded_shuffle_spreads_the_same_way_every_run() -> None:
    def run() -> list[tuple[int, int]]:
        app = sk.App("kit-shuffle")
        src = app.topic("src", partitions=2)
        out = app.topic("out")

        @app.agent(app.stream(src).shuffle(partitions=4, seed=7), sink=out)
        async def spread(stream: sk.Stream[int]) -> AsyncIterator[int]:
            async for v in stream:
                yield v

        with TestDriver(app) as driver:
            driver.send_many(src, range(40))
            assert sorted(driver.read_values(out)) == list(range(40))
            return sorted(
                (r.value, r.partition)
                for r in driver.records("kit-shuffle-src-shuffle-repartition")
            )

    first = run()
    assert first == run()
    assert {p for _, p in first} == {0, 1, 2, 3}


def test_a_watermark_after_key_by_waits_for_a_silent_partition_until_it_is_idle() -> None:
    app = sk.App("kit-idle", idle_timeout=5)
    events = app.topic("events", partitions=2, timestamp="ts")
    out = app.topic("counts")
    counts = app.window("per-10s", sk.tumbling(10), sk.count(), output=out)

    @app.agent(app.stream(events).key_by("user"), state=[counts])
    async def tally(stream: sk.Stream[dict[str, Any]]) -> None:
        async for e in stream:
            counts.add(e["user"])

    hop = "kit-idle-events-key_by-user-repartition"
    with TestDriver(app) as driver:
        driver.send(events, {"user": "ann", "ts": T0 + 1}, partition=0)
        driver.send(events, {"user": "ann", "ts": T0 + 12}, partition=0)
        # partition 1's task has said nothing yet: the stage after key_by cannot move on
        assert driver.read(out) == []
        assert set(driver.watermarks(events).values()) == {-(2**63), (T0 + 12) * 1000}
        assert set(driver.watermarks(hop).values()) == {-(2**63)}
        driver.advance_time(5)  # both partitions quiet for idle_timeout: both idle
        assert driver.read(out) == []
        driver.send(events, {"user": "bob", "ts": T0 + 13}, partition=0)  # 0 active, 1 idle
        assert set(driver.watermarks(hop).values()) == {(T0 + 13) * 1000}
        assert driver.read_values(out) == [
            {"key": "ann", "start": T0 * 1000, "end": (T0 + 10) * 1000, "count": 1, "final": True}
        ]
        # partition 1 speaks again, behind: the watermark never goes back, and its event,
        # in a closed window, is late
        driver.send(events, {"user": "cat", "ts": T0 + 2}, partition=1)
        assert [r.value for r in driver.read("kit-idle-per-10s-late")] == [
            b'{"user":"cat","ts":1704067202}'
        ]


def test_a_restart_keeps_open_windows_and_the_watermark() -> None:
    app = sk.App("kit-restart")
    visits = app.topic("visits", partitions=2, timestamp="ts")
    out = app.topic("per-minute")
    counts = app.window("per-minute", sk.tumbling(60), sk.count(), output=out)

    @app.agent(visits, state=[counts])
    async def tally(stream: sk.Stream[dict[str, Any]]) -> None:
        async for v in stream:
            counts.add(v["user"])

    def minute(n: int, count: int) -> dict[str, Any]:
        start = (T0 + 60 * n) * 1000
        return {"key": "ann", "start": start, "end": start + 60_000, "count": count, "final": True}

    with TestDriver(app) as driver:
        driver.send(visits, {"user": "ann", "ts": T0 + 5}, key="ann")
        driver.send(visits, {"user": "ann", "ts": T0 + 61}, key="ann")
        assert driver.read_values(out) == [minute(0, 1)]
        driver.restart()  # tasks stop (final checkpoint) and start again from SQLite
        assert driver.window("per-minute").get("ann", (T0 + 60) * 1000) == 1
        driver.send(visits, {"user": "ann", "ts": T0 + 10}, key="ann")  # minute 0 stays shut
        assert len(driver.read("kit-restart-per-minute-late")) == 1
        driver.send(visits, {"user": "ann", "ts": T0 + 62}, key="ann")
        driver.advance_watermark(T0 + 120)
        assert driver.read_values(out) == [minute(1, 2)]


def test_processing_time_windows_follow_the_virtual_clock() -> None:
    app = sk.App("kit-proc")
    hits = app.topic("hits", timestamp=sk.processing_time)
    out = app.topic("per-30s")
    counts = app.window("per-30s", sk.tumbling(30), sk.count(), output=out)

    @app.agent(hits, state=[counts])
    async def tally(stream: sk.Stream[str]) -> None:
        async for page in stream:
            counts.add(page)

    with TestDriver(app, start_time=T0) as driver:
        driver.send(hits, "home", timestamp=T0 - 3600)  # the record timestamp is ignored
        driver.advance_time(10)
        driver.send(hits, "home")
        driver.advance_time(25)  # nothing read since: the watermark is still at T0 + 10
        assert driver.read(out) == []
        driver.send(hits, "about")  # read at T0 + 35: the first half-minute closes
        assert driver.read_values(out) == [
            {"key": "home", "start": T0 * 1000, "end": (T0 + 30) * 1000, "count": 2, "final": True}
        ]


# -- the driver itself -----------------------------------------------------------------------


def test_the_driver_leaves_the_app_as_it_found_it(tmp_path: Path) -> None:
    app = sk.App("kit-tidy", workdir=tmp_path / "mine")
    src = app.topic("src")
    sums = app.table("sums", default=int)

    @app.agent(app.stream(src).key_by("k"), state=[sums])
    async def add(stream: sk.Stream[dict[str, int]]) -> None:
        async for v in stream:
            sums[v["k"]] += v["n"]

    with TestDriver(app) as driver:
        state = driver.workdir
        driver.send(src, {"k": "a", "n": 2})
        assert list(state.glob("kit-tidy/*/*.sqlite"))
        assert driver.table("sums")["a"] == 2
        assert "b" not in driver.table("sums")
        with pytest.raises(KeyError):
            driver.table("sums")["b"]
    assert app.settings.workdir == tmp_path / "mine"
    assert not state.exists() and not (tmp_path / "mine").exists()


def test_misuse_fails_with_a_message_that_says_what_to_do() -> None:
    app = sk.App("kit-misuse")
    src = app.topic("src")
    other = sk.App("kit-other").topic("elsewhere")

    @app.agent(src)
    async def echo(stream: sk.Stream[Any]) -> None:
        async for _ in stream:
            pass

    with TestDriver(app) as driver:
        with pytest.raises(KeyError, match="not declared by app kit-misuse"):
            driver.send(other, 1)
        with pytest.raises(ValueError, match="uses event time"):
            driver.advance_watermark(T0)
        with pytest.raises(KeyError, match="no table 'nope'"):
            driver.table("nope")
    with pytest.raises(RuntimeError, match="not running"):
        driver.send(src, 1)
    with pytest.raises(ValueError, match="has no agents"):
        TestDriver(sk.App("kit-empty"))


async def test_the_sync_driver_says_to_use_the_async_one_in_async_tests() -> None:
    app = sk.App("kit-async")
    src = app.topic("src")
    out = app.topic("out")

    @app.agent(src, sink=out)
    async def echo(stream: sk.Stream[Any]) -> AsyncIterator[Any]:
        async for v in stream:
            yield v

    with pytest.raises(RuntimeError, match="AsyncTestDriver"):
        TestDriver(app).start()
    async with AsyncTestDriver(app) as driver:
        await driver.send(src, {"a": 1})
        assert driver.read_values(out) == [{"a": 1}]


def test_after_a_stopping_failure_the_driver_refuses_to_go_on() -> None:
    app = sk.App("kit-stop", on_agent_error="stop")
    src = app.topic("src")

    @app.agent(src)
    async def fragile(stream: sk.Stream[Any]) -> None:
        async for v in stream:
            assert v != "bad", "bad input"

    with TestDriver(app) as driver:
        driver.send(src, "good")
        with pytest.raises(Exception, match="bad input"):
            driver.send(src, "bad")
        with pytest.raises(DriverFailed, match="bad input"):
            driver.send(src, "good")


# -- the kit and a real worker agree ------------------------------------------------------------


def comparison_app(uid: str, workdir: Path) -> tuple[sk.App, dict[str, sk.Topic]]:
    """Purchases (3 partitions, keyed by user, event time from `ts`) → key_by user onto 2
    partitions → a running total per user (a table, to a sink) and 10 s counts per user (a
    window table, to another sink). "tick" events only move event time."""
    app = sk.App(f"kitcmp-{uid}", workdir=workdir, commit_interval=0.2, idle_timeout=120)
    purchases = app.topic(f"kitcmp-in-{uid}", partitions=3, timestamp="ts")
    totals = app.topic(f"kitcmp-totals-{uid}", partitions=2)
    windows = app.topic(f"kitcmp-windows-{uid}", partitions=2)
    spent = app.table("spent", default=float)
    counts = app.window("counts", sk.tumbling(10), sk.count(), output=windows)

    by_user = app.stream(purchases).key_by("user", partitions=2)

    @app.agent(by_user, sink=totals, state=[spent, counts])
    async def tally(stream: sk.Stream[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        async for p in stream:
            if p["user"] == "tick":
                continue
            spent[p["user"]] += p["amount"]
            counts.add(p["user"])
            yield {"user": p["user"], "total": spent[p["user"]]}

    late = app.topic(f"kitcmp-{uid}-counts-late", key_type=bytes, value_type=bytes)
    return app, {
        "purchases": purchases,
        "totals": totals,
        "windows": windows,
        "dlq": app.dlq,
        "late": late,
    }


# (partition or None for the key's, key, value bytes, record timestamp ms)
Send = tuple[int | None, bytes | None, bytes, int]


def comparison_input() -> tuple[list[Send], list[Send]]:
    import orjson

    users = [f"u{i}" for i in range(6)]
    first: list[Send] = []
    for i in range(48):  # event times rise: nothing is late before the ticks
        user, ts = users[(i * 7) % 6], T0 + i * 0.5
        value = orjson.dumps({"user": user, "amount": i % 5 + 1, "ts": ts})
        first.append((None, user.encode(), value, round(ts * 1000)))
    for partition in range(3):  # every upstream partition moves the watermark past it all
        tick = orjson.dumps({"user": "tick", "amount": 0, "ts": T0 + 100})
        first.append((partition, b"tick", tick, (T0 + 100) * 1000))
    late = orjson.dumps({"user": "u0", "amount": 100, "ts": T0 + 1})
    second: list[Send] = [
        (None, b"u0", late, (T0 + 101) * 1000),  # in a closed window: late, still totalled
        (0, b"x", b"{not json", (T0 + 102) * 1000),  # a dead letter
    ]
    return first, second


def comparable(role: str, records: list[Any]) -> list[Any]:
    """What must agree between the two runs, in an order that does not depend on how the
    broker interleaved partitions: per key, in order (a key's events share one partition)."""
    rows = []
    for r in records:
        headers = {k: v for k, v in r.headers if k.startswith("streamkit.")}
        if role == "late":  # repartition offsets count watermark control records, which
            headers.pop("streamkit.source.offset", None)  # a worker writes on its own clock
        # dead letters and late events are stamped on arrival (LogAppendTime): the kit's
        # virtual clock and the broker's differ; the original time is in their headers
        ts = None if role in ("dlq", "late") else r.timestamp
        rows.append((r.key, r.partition, ts, r.value, sorted(headers.items())))
    if role == "windows":
        return sorted(rows)
    by_key: dict[Any, list[Any]] = {}
    for row in rows:
        by_key.setdefault(row[0], []).append(row)
    return sorted(by_key.items())


def run_in_kit(uid: str, tmp: Path, first: list[Send], second: list[Send]) -> dict[str, Any]:
    app, topics = comparison_app(uid, tmp / "unused")
    with TestDriver(app) as driver:
        for partition, key, value, ts in [*first, *second]:
            driver.send_raw(topics["purchases"], value, key=key, partition=partition,
                            timestamp=ts / 1000)  # fmt: skip
        return {
            role: comparable(role, [_as_consumed(o) for o in driver.records(t)])
            for role, t in topics.items()
            if role != "purchases"
        }


def _as_consumed(output: Any) -> Any:
    """An Output seen as raw bytes, like a record read from the broker."""
    return type("Rec", (), {
        "key": output.raw_key, "partition": output.partition, "timestamp": output.timestamp_ms,
        "value": output.raw_value, "headers": output.headers,
    })  # fmt: skip


async def test_the_kit_and_a_broker_agree(uid: str, tmp_path: Path) -> None:
    from aiokafka import AIOKafkaProducer

    from tests.kafkahelp import bootstrap, read_all, running

    first, second = comparison_input()
    kit = await asyncio.to_thread(run_in_kit, uid, tmp_path, first, second)

    app, topics = comparison_app(uid, tmp_path / "worker")
    data = [s for s in first if s[1] != b"tick"]
    windows_expected = len({(s[1], (s[3] // 1000 - T0) // 10) for s in data})
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), linger_ms=5)

    async def send(sends: list[Send]) -> None:
        for partition, key, value, ts in sends:
            await producer.send(
                topics["purchases"].name, value, key=key, partition=partition, timestamp_ms=ts
            )
        await producer.flush()

    broker: dict[str, Any] = {}
    await producer.start()
    try:
        async with running(app):
            await send(first)
            # every window closed before the late event goes in (as in the kit, where each
            # send is processed to the end): then its lateness does not depend on timing
            await read_all(topics["windows"].name, expect=windows_expected, within=60)
            await send(second)
            expect = {"totals": len(data) + 1, "windows": windows_expected, "dlq": 1, "late": 1}
            for role, count in expect.items():
                records = await read_all(topics[role].name, expect=count, within=60)
                broker[role] = comparable(role, records)
    finally:
        await producer.stop()

    assert kit == broker
    # and the answers are right: each user's last total is the sum of their amounts
    import orjson

    sums: dict[bytes, float] = {}
    for _, key, value, _ in [*data, second[0]]:
        assert key is not None
        sums[key] = sums.get(key, 0.0) + orjson.loads(value)["amount"]
    last = {key: orjson.loads(rows[-1][3])["total"] for key, rows in kit["totals"]}
    assert last == sums
    assert sum(orjson.loads(r[3])["count"] for r in kit["windows"]) == len(data)
