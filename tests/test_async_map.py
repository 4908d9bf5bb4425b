"""map_async (docs/async-io.md): the commit frontier and the key gate against brute force
(hypothesis), then the real tasks in the testing kit: per-key order under random latencies with
calls really overlapping, bounded calls in flight, the pass resumed on the right event,
retries, timeouts and the dead-letter topic, and the declarations refused."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streamkit as sk
from streamkit.asyncmap import worst_case
from streamkit.eventtime import read_control
from streamkit.runtime.async_map import check_call_budget, longest_calls
from streamkit.runtime.frontier import Frontier, KeyGate
from streamkit.runtime.txn_producers import worker_transaction_timeout
from streamkit.settings import ConfigError
from streamkit.streams import AsyncMapNode
from streamkit.testing import AsyncTestDriver

# -- the frontier and the gate ------------------------------------------------------------------

# a run: per event, how many calls it leaves, and the order its calls finish in (as a
# permutation key); events are taken in offset order, calls finish in any order between takes
runs = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10**6), st.integers(0, 3)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(runs, st.randoms(use_true_random=False))
def test_the_committable_offset_is_the_first_unfinished_event(
    run: list[tuple[int, int, int]], rnd: random.Random
) -> None:
    frontier = Frontier()
    pending: dict[int, int] = {}  # oracle: offset → calls left
    open_calls: list[tuple[int, Any]] = []
    last: int | None = None
    for offset, (calls, _, finish_now) in enumerate(run, start=5):
        slot = frontier.taken("t", offset, calls)
        last = offset
        if calls:
            assert slot is not None
            pending[offset] = calls
            open_calls += [(offset, slot)] * calls
        else:
            assert slot is None
        rnd.shuffle(open_calls)
        for _ in range(min(finish_now, len(open_calls))):
            done_offset, done_slot = open_calls.pop()
            done_slot.pending -= 1
            pending[done_offset] -= 1
        unfinished = [o for o, left in pending.items() if left]
        expected = min(unfinished) if unfinished else (None if last is None else last + 1)
        assert frontier.committable("t") == expected
        assert frontier.unfinished == len(unfinished)
    assert frontier.committable("other") is None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "b", "c", None]), max_size=50),
    st.randoms(use_true_random=False),
)
def test_the_gate_runs_one_call_per_key_in_order_and_loses_none(
    keys: list[str | None], rnd: random.Random
) -> None:
    gate: KeyGate[int] = KeyGate()
    running: list[int] = []
    started: list[int] = []
    jobs = list(enumerate(keys))
    submitted = 0
    while submitted < len(jobs) or running:
        if submitted < len(jobs) and (not running or rnd.random() < 0.5):
            job, key = jobs[submitted]
            submitted += 1
            if gate.admit(key, job):
                running.append(job)
                started.append(job)
        else:
            job = running.pop(rnd.randrange(len(running)))
            nxt = gate.release(keys[job])
            if nxt is not None:
                running.append(nxt)
                started.append(nxt)
        in_flight = [keys[j] for j in running if keys[j] is not None]
        assert len(in_flight) == len(set(in_flight)), "two calls of one key at once"
    assert sorted(started) == list(range(len(keys)))
    for key in {k for k in keys if k is not None}:
        mine = [j for j in started if keys[j] == key]
        assert mine == sorted(mine), f"key {key} out of order"
    assert gate.keys_in_flight == 0


T0 = 1_704_067_200  # 2024-01-01T00:00:00Z

# -- the real tasks in the kit ------------------------------------------------------------------


class Probe:
    """Counts calls in flight, overall and per key, while they sleep a random while."""

    def __init__(self, seed: int, most: float = 0.004) -> None:
        self.rnd = random.Random(seed)
        self.most = most
        self.now = 0
        self.peak = 0
        self.per_key: dict[str, int] = defaultdict(int)
        self.key_peak = 0

    async def __call__(self, value: dict[str, Any]) -> dict[str, Any]:
        key = value["k"]
        self.now += 1
        self.per_key[key] += 1
        self.peak = max(self.peak, self.now)
        self.key_peak = max(self.key_peak, self.per_key[key])
        try:
            await asyncio.sleep(self.rnd.random() * self.most)
        finally:
            self.now -= 1
            self.per_key[key] -= 1
        return {**value, "seen": True}


def keyed(n: int, keys: int) -> list[sk.Record]:
    return [sk.Record({"k": f"k{i % keys}", "i": i}, key=f"k{i % keys}") for i in range(n)]


async def test_each_key_keeps_its_order_under_random_latencies() -> None:
    app = sk.App("am-order")
    src, out = app.topic("src", partitions=3), app.topic("out", partitions=3)
    probe = Probe(seed=1)
    app.stream(src).map_async(probe, concurrency=8).to(out)
    async with AsyncTestDriver(app) as driver:
        await driver.send_many(src, keyed(400, 23))
        got = driver.read(out)
        await driver.checkpoint()
        committed = driver.committed(src)
    assert sorted(o.value["i"] for o in got) == list(range(400))  # each exactly once
    by_key: dict[str, list[int]] = defaultdict(list)
    for o in got:
        assert o.key == o.value["k"] and o.value["seen"]
        by_key[o.key].append(o.value["i"])
    assert all(seq == sorted(seq) for seq in by_key.values()), by_key
    assert 2 <= probe.peak <= 3 * 8  # calls overlapped; at most `concurrency` per task
    assert probe.key_peak == 1  # never two calls of one key at once
    assert sum(committed.values()) == 400


async def test_calls_in_flight_stay_within_concurrency_and_capacity() -> None:
    app = sk.App("am-bound")
    src, out = app.topic("src", partitions=1), app.topic("out", partitions=1)
    probe = Probe(seed=2, most=0.002)
    taken: list[int] = []

    def note(value: dict[str, Any]) -> dict[str, Any]:
        taken.append(value["i"])
        return value

    delivered: list[int] = []

    def after(value: dict[str, Any]) -> dict[str, Any]:
        delivered.append(value["i"])
        # events taken but not delivered: at most `capacity` (6), plus this one's record
        assert len(taken) - len(delivered) <= 6
        return value

    app.stream(src).map(note).map_async(probe, concurrency=3, capacity=6).map(after).to(out)
    async with AsyncTestDriver(app) as driver:
        await driver.send_many(src, [sk.Record({"k": f"k{i}", "i": i}) for i in range(200)])
        assert sorted(driver.read_values(out), key=lambda v: v["i"]) == [
            {"k": f"k{i}", "i": i, "seen": True} for i in range(200)
        ]
    assert probe.peak == 3  # the three workers were all busy at some point, never more


async def test_what_follows_runs_on_its_own_event_and_chained_steps_finish_it() -> None:
    app = sk.App("am-chain")
    src, out = app.topic("src", partitions=2), app.topic("out", partitions=2)
    first, second = Probe(seed=3), Probe(seed=4)

    async def tag(value: dict[str, Any]) -> dict[str, Any]:
        return {**(await second(value)), "twice": True}

    steps = app.stream(src).map_async(first, concurrency=4).map_async(tag, concurrency=2)

    @app.agent(steps, sink=out)
    async def where(stream: sk.Stream[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        async for value in stream:
            event = stream.event
            yield {"i": value["i"], "key": event.key, "offset": event.offset, "p": event.partition}

    async with AsyncTestDriver(app) as driver:
        sent = await driver.send_many(src, keyed(120, 7))
        got = driver.read(out)
        await driver.checkpoint()
        committed = driver.committed(src)
    written = {r.value["i"]: r for r in sent}
    assert sorted(o.value["i"] for o in got) == list(range(120))
    for o in got:
        origin = written[o.value["i"]]
        assert (o.value["key"], o.value["offset"], o.value["p"]) == (
            origin.key,
            origin.offset,
            origin.partition,
        )
        assert o.key == origin.key and o.timestamp == origin.timestamp
    assert committed == {p: sum(1 for r in sent if r.partition == p) for p in (0, 1)}


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_rows_of_calls_into_a_sink_are_written_once_each(
    tmp_path: Any, guarantee: str
) -> None:
    """Rows a map_async step hands to a sink beyond Kafka after the last record boundary
    (calls still in flight when the input ran out) are written at the next checkpoint, with
    offsets that never pass an unfinished event; a restart writes none again."""
    app = sk.App("am-sink", processing_guarantee=guarantee)
    src = app.topic("src", partitions=2)
    sink = sk.JsonLinesSink(tmp_path / "rows")
    app.stream(src).map_async(Probe(seed=5), concurrency=4).to(sink)
    async with AsyncTestDriver(app, workdir=tmp_path / "state") as driver:
        await driver.send_many(src, keyed(90, 7))
        await driver.checkpoint()
        await driver.restart()
        await driver.send_many(src, [sk.Record({"k": "k1", "i": 90}, key="k1")])
        await driver.checkpoint()
        assert sum(driver.committed(src).values()) == 91
    written = [
        orjson.loads(line)["i"]
        for f in sorted((tmp_path / "rows").glob("*.jsonl"))
        for line in f.read_bytes().splitlines()
    ]
    assert sorted(written) == list(range(91))


async def test_a_call_is_retried_then_its_event_goes_to_the_dead_letter_topic() -> None:
    app = sk.App("am-dlq")
    src, out = app.topic("src", partitions=1), app.topic("out", partitions=1)
    attempts: dict[int, int] = defaultdict(int)

    async def flaky(value: dict[str, Any]) -> dict[str, Any]:
        i = value["i"]
        attempts[i] += 1
        if i == 1 and attempts[i] <= 2:
            raise ConnectionError("refused")  # recovers at the third attempt
        if i == 2:
            raise ValueError(f"no such customer {i}")  # always
        if i == 3:
            await asyncio.sleep(60)  # always too slow
        return value

    app.stream(src).map_async(flaky, concurrency=4, timeout=0.05, retries=2, backoff=0.01).to(out)
    async with AsyncTestDriver(app) as driver:
        await driver.send_many(src, [sk.Record({"i": i}, key="same") for i in range(6)])
        assert driver.read_values(out) == [{"i": 0}, {"i": 1}, {"i": 4}, {"i": 5}]
        dead = driver.read(f"{app.id}-dlq")
        await driver.checkpoint()
        assert driver.committed(src) == {0: 6}
    assert attempts == {0: 1, 1: 3, 2: 3, 3: 3, 4: 1, 5: 1}
    assert [
        (d.error["streamkit.error.type"], d.error["streamkit.source.offset"]) for d in dead
    ] == [
        ("CallFailed", "2"),
        ("CallFailed", "3"),
    ]
    assert dead[0].error["streamkit.error"] == (
        "map_async(flaky) failed 3 times, the last: ValueError: no such customer 2"
    )
    assert dead[1].error["streamkit.error"].endswith("the last: timed out after 0.05 s")


def test_bad_declarations_are_refused_with_what_to_change() -> None:
    app = sk.App("am-bad")
    src = app.topic("src")
    stream = app.stream(src)

    def plain(value: Any) -> Any:
        return value

    async def fine(value: Any) -> Any:
        return value

    with pytest.raises(ConfigError, match="give an `async def` function"):
        stream.map_async(plain)
    with pytest.raises(ConfigError, match="concurrency must be a whole number >= 1"):
        stream.map_async(fine, concurrency=0)
    with pytest.raises(ConfigError, match=r"capacity \(2\) below concurrency \(4\)"):
        stream.map_async(fine, concurrency=4, capacity=2)
    with pytest.raises(ConfigError, match="timeout must be > 0 seconds"):
        stream.map_async(fine, timeout=0)
    minute = app.window("per-minute", sk.tumbling(60), sk.count())
    stream.map_async(fine).with_state(minute).to(app.topic("out"))
    with pytest.raises(ConfigError, match="key_by the results of map_async before windowing"):
        assert app.stages


async def test_an_offset_waits_for_every_event_before_it() -> None:
    app = sk.App("am-frontier")
    src, out = app.topic("src", partitions=1), app.topic("out", partitions=1)
    gate = asyncio.Event()

    async def slow_first(value: dict[str, Any]) -> dict[str, Any]:
        if value["i"] == 1:
            await gate.wait()
        return value

    app.stream(src).map_async(slow_first, concurrency=4).to(out)
    async with AsyncTestDriver(app) as driver:
        sending = asyncio.create_task(
            driver.send_many(src, [sk.Record({"i": i}, key=f"k{i}") for i in range(6)])
        )
        [task] = [t for t in driver._tasks() if t.stage.source.name == "src"]

        def delivered() -> list[int]:
            return sorted(v["i"] for v in driver.read_values(out))

        seen: list[int] = []
        for _ in range(2000):  # the others finish while event 1 waits
            seen += delivered()
            if len(seen) == 5:
                break
            await asyncio.sleep(0.001)
        assert seen == [0, 2, 3, 4, 5]
        assert list(task.offsets().values()) == [1]  # not past the unfinished event 1
        gate.set()
        await sending
        assert driver.read_values(out) == [{"i": 1}]
        assert list(task.offsets().values()) == [6]


def test_under_exactly_once_a_step_must_finish_within_the_shutdown_timeout() -> None:
    async def call(value: Any) -> Any:
        return value

    def app_with(**step: Any) -> sk.App:
        app = sk.App("am-budget", processing_guarantee="exactly_once", shutdown_timeout=30)
        app.stream(app.topic("src")).map_async(call, **step).to(app.topic("out"))
        return app

    fine = app_with()  # 4 attempts of 5 s, backoff 0.1 + 0.2 + 0.4 s
    [step] = [n for n in fine.stages[0].nodes if isinstance(n, AsyncMapNode)]
    assert worst_case(step.options) == pytest.approx(20.7)
    check_call_budget(fine.stages, fine.settings)
    slow, endless = app_with(timeout=10), app_with(timeout=None)
    with pytest.raises(ConfigError, match=r"may take 40.7 s per event \(4 attempts of 10 s"):
        check_call_budget(slow.stages, slow.settings)
    with pytest.raises(ConfigError, match="has no timeout, not within shutdown_timeout"):
        check_call_budget(endless.stages, endless.settings)
    at_least_once = sk.App("am-budget-alo")
    at_least_once.stream(at_least_once.topic("src")).map_async(call, timeout=None).to(
        at_least_once.topic("out")
    )
    check_call_budget(at_least_once.stages, at_least_once.settings)  # replays are allowed


async def test_the_watermark_leaves_behind_the_events_whose_calls_are_done() -> None:
    """Under a steady flow (calls always in flight) the stage still tells the next one its
    watermark now and then, and never before every event up to it has gone out."""
    app = sk.App("am-wm")
    src = app.topic("src", partitions=1, timestamp="ts")
    counts = app.window("per-minute", sk.tumbling(60), sk.count(), output=app.topic("counts"))
    holder: dict[str, AsyncTestDriver] = {}

    async def call(value: dict[str, Any]) -> dict[str, Any]:
        holder["driver"].clock.advance(0.001)  # processing time moves while calls run
        await asyncio.sleep(0)
        return value

    steps = app.stream(src).map_async(call, concurrency=4).key_by("k", name="k")

    @app.agent(steps, state=[counts])
    async def count(stream: sk.Stream[dict[str, Any]]) -> None:
        async for value in stream:
            counts.add(value["k"])

    n = 3000
    async with AsyncTestDriver(app) as driver:
        holder["driver"] = driver
        await driver.send_many(
            src,
            [sk.Record({"k": f"k{i % 5}", "ts": T0 + i / 10}, key=f"k{i % 5}") for i in range(n)],
        )
        hop = driver.log.written("am-wm-k-repartition")
    marks: list[tuple[int, int]] = []  # (data records written before, watermark)
    data = 0
    for r in hop:
        control = read_control(r.headers)
        if control is None:
            data += 1
        else:
            marks.append((data, control[1]))
    mid_stream = [(before, w) for before, w in marks if 0 < before < n]
    assert len(mid_stream) >= 2, marks  # sent while calls were in flight, not only at the end
    for before, watermark in marks:  # every event at or before the watermark went out first
        assert before >= sum(1 for i in range(n) if (T0 + i / 10) * 1000 <= watermark)


def test_a_per_worker_transaction_outlasts_the_longest_wait_for_calls() -> None:
    """A checkpoint's first step waits for the map_async calls in flight while the worker's
    one transaction is open: its default timeout covers that wait (else it was fenced)."""

    async def call(value: Any) -> Any:
        return value

    app = sk.App("am-txn", processing_guarantee="exactly_once", shutdown_timeout=30)
    app.stream(app.topic("src")).map_async(call).to(app.topic("out"))  # 20.7 s at worst
    app.stream(app.topic("other")).map_async(call, timeout=1, retries=0).to(app.topic("out2"))
    pause = longest_calls(app.stages)
    assert pause == pytest.approx(20.7)
    assert worker_transaction_timeout(app.settings, pause) == 10_000 + 20_700
    assert worker_transaction_timeout(app.settings) == 10_000  # no map_async: Kafka Streams'
    plain = sk.App("am-txn-plain")
    plain.stream(plain.topic("src")).to(plain.topic("out"))
    assert longest_calls(plain.stages) == 0.0
    chosen = sk.App(
        "am-txn-set", processing_guarantee="exactly_once", transaction_timeout_ms=60_000
    )
    assert worker_transaction_timeout(chosen.settings, pause) == 60_000  # an explicit one wins
