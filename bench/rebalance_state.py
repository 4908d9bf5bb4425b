"""A rebalance of a stateful app, eager vs cooperative: 3 → 2 → 3 workers of `apps.shop`.

    python -m bench.rebalance_state [--keys 100000] [--rate 800] [--settle 8]
                                    [--protocol eager|cooperative]

Real `streamkit worker apps.shop:app` processes (exactly-once, one transactional producer per
worker; `shop` keys purchases by user through a repartition topic into two tables, 4
partitions), each on its own workdir. `--keys` users are loaded first (one purchase each:
that many keys in each table); then purchases of random users arrive at `--rate` events/s.
The worker holding the most stateful partitions leaves (SIGTERM), and after the group
settled, comes back on the same workdir (its stores warm: the assignor gives their
partitions back). For each change, from the
committed outputs (`shop-totals`, read under read_committed as they arrive; an output
partition is the stateful stage's partition of the same number) and the workers' logs:
the stateful partitions that stayed with their worker and those that moved; the longest
pause between two outputs of each group after the change (median over the group; the
floor is the app's commit interval, 0.5 s); and how many tasks the workers revoked
(both stages).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import signal
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from tests.chaoshelp import OutputWatch
from tests.kafkahelp import WorkerProcess, bootstrap, wait_until
from tests.rebalancehelp import held, revoked_tasks, teardown
from tests.shophelp import shop_worker

PARTITIONS = 4  # apps.shop's


def shop(uid: str, root: Path, name: str, protocol: str) -> WorkerProcess:
    w = shop_worker(uid, root / name, root, name)
    w.env.update(
        {
            "STREAMKIT_REBALANCE_PROTOCOL": protocol,
            "STREAMKIT_TRANSACTIONAL_PRODUCER": "per_worker",
            "STREAMKIT_HEARTBEAT_INTERVAL_MS": "500",
            "STREAMKIT_WEB_ENABLED": "false",
        }
    )
    return w


def stateful(log: str) -> set[int]:
    """The partitions of the stateful stage (`...-by-user-repartition`) a worker holds."""
    return {int(p) for p in held(log, r"by-user-repartition\[(\d+)\]")}


def everything(workers: list[WorkerProcess]) -> int:
    """Partitions (both stages) the live workers hold."""
    return sum(len(held(text(w))) for w in workers if w.alive)


def text(w: WorkerProcess) -> str:
    return w.log() if w.log_path.exists() else ""


async def feed(topic: str, keys: int, rate: int, stop: asyncio.Event) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), linger_ms=5)
    await producer.start()
    rng = random.Random(7)
    try:
        i, started = 0, time.monotonic()
        while not stop.is_set():
            row = {"user_id": f"user_{rng.randrange(keys)}", "amount": 1.0, "ts": time.time()}
            await producer.send(topic, orjson.dumps(row), partition=i % PARTITIONS)
            i += 1
            ahead = i / rate - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
    finally:
        await producer.stop()


async def preload(topic: str, keys: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), linger_ms=20)
    await producer.start()
    try:
        for start in range(0, keys, 5000):
            futures = [
                await producer.send(
                    topic,
                    orjson.dumps({"user_id": f"user_{k}", "amount": 1.0, "ts": 0.0}),
                    partition=k % PARTITIONS,
                )
                for k in range(start, min(keys, start + 5000))
            ]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


def longest_pause(watch: OutputWatch, parts: set[int], since: float, until: float) -> float:
    """The median over `parts` of each output partition's longest pause in [since, until)."""
    if not parts:
        return float("nan")
    gaps = []
    for p in parts:
        times = [since, *(t for t in watch.arrivals.get(p, []) if since <= t < until), until]
        gaps.append(max(b - a for a, b in itertools.pairwise(times)))
    return round(statistics.median(gaps), 2)


async def change(
    watch: OutputWatch,
    workers: list[WorkerProcess],
    action: Callable[[], object],
    settled: Callable[[], bool],
    settle: float,
) -> dict[str, Any]:
    before = {id(w): stateful(text(w)) for w in workers}
    revoked_before = sum(revoked_tasks(text(w)) for w in workers)
    at = time.monotonic()
    action()
    await wait_until(settled, within=120, what="the rebalance", every=0.05)
    await asyncio.sleep(settle)
    until = time.monotonic()
    stayed = {p for w in workers for p in before.get(id(w), set()) & stateful(text(w))}
    moved = set(range(PARTITIONS)) - stayed
    return {
        "stayed": len(stayed),
        "moved": len(moved),
        "stayed_longest_pause_s": longest_pause(watch, stayed, at, until),
        "moved_longest_pause_s": longest_pause(watch, moved, at, until),
        "tasks_revoked": sum(revoked_tasks(w.log()) for w in workers) - revoked_before,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    uid = uuid.uuid4().hex[:8]
    root = Path(tempfile.mkdtemp(prefix="bench-rebalance-state-"))
    workers = [shop(uid, root, f"w{i}", args.protocol).start() for i in range(3)]
    stop = asyncio.Event()
    watch = OutputWatch(f"totals-{uid}")
    feeding: asyncio.Task[None] | None = None
    try:
        await wait_until(lambda: everything(workers) == 2 * PARTITIONS, within=120, what="3")
        await watch.start()
        loaded = time.monotonic()
        await preload(f"purchases-{uid}", args.keys)
        await wait_until(
            lambda: len(watch.records) >= args.keys, within=600, what="the keys loaded", every=0.5
        )
        load_s = time.monotonic() - loaded
        feeding = asyncio.create_task(feed(f"purchases-{uid}", args.keys, args.rate, stop))
        await asyncio.sleep(5)
        third = max(workers, key=lambda w: len(stateful(text(w))))  # one holding state
        leave = await change(
            watch,
            workers,
            lambda: third.signal(signal.SIGTERM),
            lambda: not third.alive and everything(workers) == 2 * PARTITIONS,
            args.settle,
        )
        name = third.log_path.stem
        back = shop(uid, root, name, args.protocol)
        back.log_path = root / f"{name}-back.log"
        workers.append(back)
        join = await change(
            watch,
            workers,
            back.start,
            lambda: bool(held(text(back))) and everything(workers) == 2 * PARTITIONS,
            args.settle,
        )
    finally:
        await teardown(stop, feeding, watch, workers)
    return {
        "protocol": args.protocol,
        "keys": args.keys,
        "rate": args.rate,
        "load_s": round(load_s, 1),
        "leave_3_to_2": leave,
        "back_2_to_3": join,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=800)
    parser.add_argument("--settle", type=float, default=8.0)
    parser.add_argument("--protocol", choices=["eager", "cooperative"], default="cooperative")
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
