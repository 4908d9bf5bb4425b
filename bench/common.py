"""Helpers the benchmarks share: events, a pre-loaded input topic, an outside observer that
times a run (output end offsets, then the group's committed offsets), and the results table.

Every run is timed the same way, from outside the system under test: the clock starts just
before the system is launched (its client start and group join included) and stops when the
output topic holds all N records AND the group's committed offsets reach the input's end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

PARTITIONS = 4
SEED = 20240601
POLL_EVERY = 0.05  # seconds between two looks at the output / the committed offsets
STOP_GRACE = 30.0  # seconds a system gets to stop after its run before it is cancelled


class RunFailed(Exception):
    """The system under test stopped with an error before it was done."""


def bootstrap() -> str:
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not servers:
        raise SystemExit("set KAFKA_BOOTSTRAP_SERVERS (scripts/localkafka.py run -- CMD does)")
    return servers


def make_events(n: int, seed: int = SEED) -> list[bytes]:
    """N small JSON orders (about 83 bytes each), the same for a given seed."""
    r = random.Random(seed).random
    return [
        b'{"user_id":"u%d","item":"sku-%05d","amount":%.2f,"qty":%d,"ts":%.3f}'
        % (r() * 100_000, r() * 10_000, 1 + r() * 499, 1 + r() * 9, 1_700_000_000 + i / 1000)
        for i in range(n)
    ]


class Cluster:
    """An admin client and a group-less consumer: create topics, read end/committed offsets."""

    def __init__(self) -> None:
        self.admin: Any = AIOKafkaAdminClient(bootstrap_servers=bootstrap())
        self.consumer: Any = AIOKafkaConsumer(bootstrap_servers=bootstrap())

    async def __aenter__(self) -> Cluster:
        await self.admin.start()
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def create_topics(self, names: Sequence[str], partitions: int = PARTITIONS) -> None:
        # no retention: pipeline B's records carry 2023 event times, which the broker's
        # 7-day time retention would delete minutes after the pre-load
        forever = {"retention.ms": "-1"}
        topics = [NewTopic(name, partitions, 1, topic_configs=forever) for name in names]
        await self.admin.create_topics(topics)
        while True:  # wait until the metadata shows every partition
            metas = await self.admin.describe_topics(list(names))
            if all(
                m["error_code"] == 0
                and len(m["partitions"]) == partitions
                and all(p["leader"] >= 0 for p in m["partitions"])
                for m in metas
            ):
                return
            await asyncio.sleep(0.1)

    async def fresh_input(
        self, prefix: str, values: Sequence[bytes], timestamps: Sequence[int] | None = None
    ) -> tuple[str, str, str]:
        """New input and output topics and a group name for one run (`{prefix}-in-{uid}`,
        `{prefix}-out-{uid}`, `{prefix}-{uid}`), the input pre-loaded with `values`."""
        uid = uuid.uuid4().hex[:8]
        source, output, group = f"{prefix}-in-{uid}", f"{prefix}-out-{uid}", f"{prefix}-{uid}"
        await self.create_topics([source, output])
        await self.warm_up_groups()
        await preload(source, values, timestamps=timestamps)
        return source, output, group

    async def warm_up_groups(self) -> None:
        """Find a group coordinator once, so the first timed run does not wait for it."""
        for _ in range(100):
            with contextlib.suppress(KafkaError):
                await self.admin.list_consumer_group_offsets("bench-warm-up")
                return
            await asyncio.sleep(0.1)

    async def end_offsets(self, topic: str, partitions: int = PARTITIONS) -> dict[int, int]:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await self.consumer.end_offsets(tps)
        return {tp.partition: int(offset) for tp, offset in ends.items()}

    async def count(self, topic: str, partitions: int = PARTITIONS) -> int:
        """Records in a topic written without transactions: the sum of its end offsets."""
        return sum((await self.end_offsets(topic, partitions)).values())

    async def wait_stable(
        self, group: str, alive: Callable[[], bool], within: float, members: int = 1
    ) -> None:
        """Until `group` is Stable with `members` members (its system has joined and been
        assigned)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not alive():
                raise RuntimeError("the system exited before its group was stable")
            with contextlib.suppress(KafkaError):
                described = await self.admin.describe_consumer_groups([group])
                # DescribeGroups response: groups = [(error, id, state, type, protocol, members)]
                for g in described[0].groups:
                    if g[1] == group and g[2] == "Stable" and len(g[5]) >= members:
                        return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"group {group} not stable within {within:.0f} s")

    async def committed(self, group: str, topic: str) -> dict[int, int]:
        offsets = await self.admin.list_consumer_group_offsets(group)
        return {tp.partition: int(m.offset) for tp, m in offsets.items() if tp.topic == topic}


def peer_env(
    pipeline: str,
    source: str,
    output: str,
    group: str,
    guarantee: str,
    commit_interval: float,
    state: str | None = None,
) -> dict[str, str]:
    """The `BENCH_*` variables every peer program reads (bench/peers/*, bench/kstreams,
    bench/flink): which pipeline, where its input and output are, its group, guarantee,
    commit interval and (when given) its state folder."""
    env = {
        "BENCH_PIPELINE": pipeline,
        "BENCH_BOOTSTRAP": bootstrap(),
        "BENCH_INPUT": source,
        "BENCH_OUTPUT": output,
        "BENCH_GROUP": group,
        "BENCH_GUARANTEE": guarantee,
        "BENCH_COMMIT_INTERVAL": str(commit_interval),
    }
    if state is not None:
        env["BENCH_STATE_DIR"] = state
    return env


async def preload(
    topic: str,
    values: Sequence[bytes],
    partitions: int = PARTITIONS,
    timestamps: Sequence[int] | None = None,
) -> None:
    """Write `values` unkeyed, round-robin over the partitions, in whole batches, with the
    given record timestamps (ms) or the producer's clock."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap(), acks="all", linger_ms=5, max_batch_size=512 * 1024
    )
    await producer.start()
    try:
        await asyncio.gather(
            *(
                _fill_partition(
                    producer,
                    topic,
                    p,
                    values[p::partitions],
                    [None] * len(values[p::partitions])
                    if timestamps is None
                    else timestamps[p::partitions],
                )
                for p in range(partitions)
            )
        )
    finally:
        await producer.stop()


async def _fill_partition(
    producer: Any,
    topic: str,
    partition: int,
    values: Sequence[bytes],
    timestamps: Sequence[int | None],
) -> None:
    deliveries: list[asyncio.Future[Any]] = []
    batch = producer.create_batch()
    for value, ts in zip(values, timestamps, strict=True):
        if batch.append(key=None, value=value, timestamp=ts) is None:
            deliveries.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            batch.append(key=None, value=value, timestamp=ts)
    deliveries.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*deliveries)


# -- timing one run ---------------------------------------------------------------------------


@dataclass
class Target:
    """One run: which system, what it reads, writes and commits, and when it is done."""

    system: str
    rep: int
    source: str
    source_ends: dict[int, int]
    output: str
    group: str
    events: int


@dataclass
class Timeline:
    """Monotonic times (s) of the moments the observer saw, all measured from `started`."""

    started: float
    first_output: float | None = None
    p10: float | None = None
    p90: float | None = None
    output_done: float | None = None
    committed_done: float | None = None

    def note_count(self, before: tuple[float, int], now: tuple[float, int], n: int) -> None:
        (t0, c0), (t1, c1) = before, now
        if self.first_output is None and c1 > 0:
            self.first_output = t1
        if self.p10 is None and c1 >= 0.1 * n:
            self.p10 = _crossing(0.1 * n, t0, c0, t1, c1)
        if self.p90 is None and c1 >= 0.9 * n:
            self.p90 = _crossing(0.9 * n, t0, c0, t1, c1)
        if self.output_done is None and c1 >= n:
            self.output_done = t1


def _crossing(threshold: float, t0: float, c0: int, t1: float, c1: int) -> float:
    """When the count passed `threshold`, interpolated between two looks."""
    return t1 if c1 == c0 else t0 + (threshold - c0) / (c1 - c0) * (t1 - t0)


def _check_alive(system: asyncio.Task[None]) -> None:
    if system.done() and not system.cancelled() and (exc := system.exception()) is not None:
        raise RunFailed(f"{type(exc).__name__}: {exc}")


async def watch(
    cluster: Cluster, target: Target, line: Timeline, system: asyncio.Task[None]
) -> None:
    """Poll the output until it holds N records, then the group until it committed the input."""
    previous = (line.started, 0)
    while line.output_done is None:
        _check_alive(system)
        count = await cluster.count(target.output)
        now = (time.monotonic(), count)
        line.note_count(previous, now, target.events)
        previous = now
        if line.output_done is None:
            await asyncio.sleep(POLL_EVERY)
    while True:
        _check_alive(system)
        committed = await cluster.committed(target.group, target.source)
        if all(committed.get(p, -1) >= end for p, end in target.source_ends.items()):
            line.committed_done = time.monotonic()
            return
        await asyncio.sleep(POLL_EVERY)


@dataclass
class RunResult:
    system: str
    rep: int
    events: int
    ok: bool
    error: str
    output_count: int
    total_s: float | None = None  # start → output complete and input committed
    first_output_s: float | None = None  # start → first output record (start-up, group join)
    steady_s: float | None = None  # 10 % → 90 % of the output
    commit_tail_s: float | None = None  # output complete → input committed
    e2e_rate: float | None = None  # events / total_s
    steady_rate: float | None = None  # 0.8 * events / steady_s


def result_of(target: Target, line: Timeline, count: int, error: str) -> RunResult:
    n = target.events
    if not error and count != n:
        error = f"output holds {count} records, expected exactly {n}"
    result = RunResult(target.system, target.rep, n, not error, error, count)
    if error or line.committed_done is None or line.output_done is None:
        return result
    result.total_s = line.committed_done - line.started
    result.e2e_rate = n / result.total_s
    result.commit_tail_s = line.committed_done - line.output_done
    result.first_output_s = (line.first_output or line.output_done) - line.started
    if line.p10 is not None and line.p90 is not None and line.p90 > line.p10:
        result.steady_s = line.p90 - line.p10
        result.steady_rate = 0.8 * n / result.steady_s
    return result


Launch = Callable[[], Coroutine[Any, Any, None]]


async def timed_run(
    cluster: Cluster, target: Target, launch: Launch, stop: Callable[[], None], within: float
) -> RunResult:
    """Launch a system, time it with `watch`, then stop it and count its output exactly."""
    line = Timeline(time.monotonic())
    task = asyncio.create_task(launch(), name=f"bench-{target.system}-{target.rep}")
    error = ""
    try:
        async with asyncio.timeout(within):
            await watch(cluster, target, line, task)
    except TimeoutError:
        error = f"not done within {within:.0f} s"
    except RunFailed as exc:
        error = str(exc)
    stop()
    stop_error = await _finish(task)
    error = error or stop_error
    return result_of(target, line, await cluster.count(target.output), error)


async def _finish(task: asyncio.Task[None]) -> str:
    """Wait for a stopped system; cancel it after STOP_GRACE. Its error, if any."""
    done, _ = await asyncio.wait({task}, timeout=STOP_GRACE)
    if not done:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return f"did not stop within {STOP_GRACE:.0f} s"
    exc = None if task.cancelled() else task.exception()
    return "" if exc is None else f"{type(exc).__name__}: {exc}"


# -- reporting ----------------------------------------------------------------------------------


def summarize(results: Sequence[RunResult], systems: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per system: runs, failures, median rates; ratios to the first system (the baseline)."""
    summary: dict[str, dict[str, Any]] = {}
    for system in systems:
        ok = [r for r in results if r.system == system and r.ok]
        e2e = [r.e2e_rate for r in ok if r.e2e_rate is not None]
        steady = [r.steady_rate for r in ok if r.steady_rate is not None]
        summary[system] = {
            "runs": sum(1 for r in results if r.system == system),
            "ok": len(ok),
            "e2e_median": statistics.median(e2e) if e2e else None,
            "steady_median": statistics.median(steady) if steady else None,
        }
    base = summary[systems[0]]
    for row in summary.values():
        for name in ("e2e", "steady"):
            mine, theirs = row[f"{name}_median"], base[f"{name}_median"]
            row[f"{name}_ratio"] = mine / theirs if mine and theirs else None
    return summary


def _num(value: float | None, fmt: str = ",.0f") -> str:
    return "—" if value is None else format(value, fmt)


def markdown(title: str, results: Sequence[RunResult], summary: dict[str, dict[str, Any]]) -> str:
    baseline = next(iter(summary))
    lines = [
        f"## {title}",
        "",
        f"| system | ok runs | end-to-end events/s (median) | steady events/s (median) "
        f"| end-to-end vs {baseline} | steady vs {baseline} |",
        "|---|---|--:|--:|--:|--:|",
    ]
    for system, row in summary.items():
        lines.append(
            f"| {system} | {row['ok']}/{row['runs']} | {_num(row['e2e_median'])} "
            f"| {_num(row['steady_median'])} | {_num(row['e2e_ratio'], '.0%')} "
            f"| {_num(row['steady_ratio'], '.0%')} |"
        )
    lines += [
        "",
        "| rep | system | status | total s | to first output s | 10→90 % s | commit tail s "
        "| end-to-end events/s | steady events/s |",
        "|--:|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        status = "ok" if r.ok else f"FAILED: {r.error}"
        lines.append(
            f"| {r.rep} | {r.system} | {status} | {_num(r.total_s, '.2f')} "
            f"| {_num(r.first_output_s, '.2f')} | {_num(r.steady_s, '.2f')} "
            f"| {_num(r.commit_tail_s, '.2f')} | {_num(r.e2e_rate)} | {_num(r.steady_rate)} |"
        )
    return "\n".join(lines)


def write_json(path: Path, meta: dict[str, Any], results: Sequence[RunResult]) -> None:
    """`meta` (what was run, its summary) and every run's numbers, as JSON."""
    path.write_text(json.dumps({**meta, "runs": [asdict(r) for r in results]}, indent=2) + "\n")
