"""A rebalance under load, 3 → 4 → 3 workers: what the partitions that do not move lose.

    python -m bench.rebalance [--partitions 12] [--rate 1200] [--settle 8] [--guarantee G]
                              [--protocol eager|cooperative]

Real `streamkit worker tests.procapp:app` processes (a stateless echo that stamps each output
with its input partition and the pid that processed it), at-least-once, input produced at
`--rate` events/s spread evenly over the partitions. Three workers run; a fourth starts; after
`--settle` seconds it is stopped (SIGTERM). For each change: the partitions whose processing
pid did not change ("stayed") and those that moved, and for each group the share of its
normal output rate it kept over the 3 s after the change and the median of its partitions'
longest output pause after the change (outputs read under read_committed, by arrival).
`--protocol` (default eager, the figures of docs/rebalancing.md): eager, every worker revokes
every partition at each rebalance; cooperative (the workers' default), only what moves.
"Tasks paused" is the partitions the workers' logs say they revoked.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from tests.chaoshelp import OutputWatch
from tests.kafkahelp import WorkerProcess, wait_until
from tests.rebalancehelp import feed, owners, revoked_tasks, teardown

WINDOW = 3.0  # seconds after a change over which the kept share is measured


def worker(uid: str, root: Path, name: str, args: argparse.Namespace) -> WorkerProcess:
    env = {
        "STREAMKIT_PROCESSING_GUARANTEE": args.guarantee,
        "STREAMKIT_REBALANCE_PROTOCOL": args.protocol,
        "SKTEST_ID": uid,
        "SKTEST_PARTITIONS": str(args.partitions),
        "STREAMKIT_WORKDIR": str(root / name),
        "STREAMKIT_WEB_ENABLED": "false",
    }
    return WorkerProcess("tests.procapp:app", env, root / f"{name}.log")


def kept(watch: OutputWatch, parts: set[int], at: float, per_partition_rate: float) -> float:
    """Outputs of `parts` arriving in [at, at + WINDOW) / what their normal rate gives."""
    if not parts:
        return float("nan")
    count = 0
    for arrived, record in zip(watch.times, watch.records, strict=True):
        if at <= arrived < at + WINDOW and orjson.loads(record.value)["partition"] in parts:
            count += 1
    return count / (per_partition_rate * WINDOW * len(parts))


def longest_gap(watch: OutputWatch, parts: set[int], since: float, until: float) -> float:
    """The median over `parts` of each partition's longest pause between two output arrivals
    in [since, until) (the reader polls every 0.2 s: that is the floor)."""
    arrivals: dict[int, list[float]] = {p: [since] for p in parts}
    for arrived, record in zip(watch.times, watch.records, strict=True):
        partition = orjson.loads(record.value)["partition"]
        if since <= arrived < until and partition in arrivals:
            arrivals[partition].append(arrived)
    gaps = sorted(max(b - a for a, b in itertools.pairwise(t)) for t in arrivals.values())
    return gaps[len(gaps) // 2] if gaps and all(len(t) > 1 for t in arrivals.values()) else 0.0


async def change(
    watch: OutputWatch,
    workers: list[WorkerProcess],
    action: Any,
    args: argparse.Namespace,
) -> dict[str, Any]:
    partitions, rate, settle = args.partitions, args.rate, args.settle
    revoked = sum(revoked_tasks(w.log()) for w in workers if w.log_path.exists())
    before = owners(watch, time.monotonic() - 2.0, time.monotonic())
    at = time.monotonic()
    action()
    await asyncio.sleep(settle)
    after = owners(watch, time.monotonic() - 2.0, time.monotonic())
    stayed = {p for p in range(partitions) if before.get(p) and before.get(p) == after.get(p)}
    moved = set(range(partitions)) - stayed
    per_partition = rate / partitions
    return {
        "stayed": len(stayed),
        "moved": len(moved),
        "stayed_kept": round(kept(watch, stayed, at, per_partition), 2),
        "moved_kept": round(kept(watch, moved, at, per_partition), 2),
        "stayed_longest_gap_s": round(longest_gap(watch, stayed, at, at + settle), 2),
        "moved_longest_gap_s": round(longest_gap(watch, moved, at, at + settle), 2),
        "tasks_paused": sum(revoked_tasks(w.log()) for w in workers if w.log_path.exists())
        - revoked,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    uid = uuid.uuid4().hex[:8]
    root = Path(tempfile.mkdtemp(prefix="bench-rebalance-"))
    workers = [worker(uid, root, f"w{i}", args).start() for i in range(3)]
    stop = asyncio.Event()
    watch = OutputWatch(f"proc-out-{uid}")
    feeding: asyncio.Task[None] | None = None
    try:
        await wait_until(
            lambda: all("assigned" in w.log() for w in workers), within=90, what="3 workers"
        )
        await asyncio.sleep(3)  # let the last join settle
        await watch.start()
        feeding = asyncio.create_task(feed(f"proc-in-{uid}", args.partitions, args.rate, stop))
        await asyncio.sleep(4)
        fourth = worker(uid, root, "w3", args)
        workers.append(fourth)
        join = await change(watch, workers, fourth.start, args)
        leave = await change(watch, workers, lambda: fourth.signal(signal.SIGTERM), args)
    finally:
        await teardown(stop, feeding, watch, workers)
    return {
        "partitions": args.partitions,
        "rate": args.rate,
        "guarantee": args.guarantee,
        "protocol": args.protocol,
        "producers": os.environ.get("STREAMKIT_TRANSACTIONAL_PRODUCER", "per_partition"),
        "join_3_to_4": join,
        "leave_4_to_3": leave,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--rate", type=int, default=1200)
    parser.add_argument("--settle", type=float, default=8.0)
    parser.add_argument(
        "--guarantee", choices=["at_least_once", "exactly_once"], default="at_least_once"
    )
    parser.add_argument("--protocol", choices=["eager", "cooperative"], default="eager")
    print(json.dumps(asyncio.run(run(parser.parse_args()))))


if __name__ == "__main__":
    main()
