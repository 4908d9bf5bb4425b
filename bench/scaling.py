"""Scaling by processes: pipeline A, exactly-once, over 64 partitions with 1, 2, 4 and 8
`streamkit worker` processes.

    python -m bench.scaling [--workers 1,2,4,8] [--partitions 64] [--events N] [--reps R]
                            [--mode per_worker|per_partition] [--json FILE]
    python -m bench.scaling --assignment     (JoinGroup / SyncGroup sizes, no broker)

For each worker count: fresh topics (`--partitions` source partitions, as many repartition
and output partitions), W workers (`bench/scaleapp.py`, commit interval 0.1 s, HTTP off)
started on the empty source; once their group is Stable with W members, N events are
written (round-robin over the partitions) and the clock runs until a read_committed reader
has N outputs. Reported per run:

- events/s: N / (last output visible - first event sent), and per worker (÷ W); the time
  the writing took (when the two are close, the harness, not the workers, set the pace);
- CPU µs per event: the workers' CPU time (user + system, /proc/<pid>/stat) over the run,
  summed over the workers, ÷ N — what the work costs, less sensitive than events/s to the
  other processes sharing the machine;
- each worker's CPU share of one core over the run (mean over the workers).

The writer and the reader run in this process and the broker beside it: on a machine with
fewer cores than W + 2 the workers compete with them, which the CPU share shows.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from bench.common import Cluster, make_events, preload
from bench.exactly_once import Reader
from streamkit.runtime.assignor import StreamkitAssignor
from tests.kafkahelp import WorkerProcess

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15)


async def members(cluster: Cluster, group: str) -> int:
    """Members of `group` once it is Stable (0 before)."""
    with contextlib.suppress(KafkaError):
        described = await cluster.admin.describe_consumer_groups([group])
        for g in described[0].groups:  # (error, id, state, type, protocol, members)
            if g[1] == group and g[2] == "Stable":
                return len(g[5])
    return 0


async def one_run(
    cluster: Cluster, workers: int, partitions: int, events: list[bytes], mode: str
) -> dict[str, Any]:
    uid = uuid.uuid4().hex[:6]
    source, output = f"bs-in-{uid}", f"bs-out-{uid}"
    await cluster.create_topics([source, output], partitions=partitions)
    with tempfile.TemporaryDirectory() as root:
        env = {
            "BS_UID": uid,
            "BS_SOURCE": source,
            "BS_OUTPUT": output,
            "BS_PARTITIONS": str(partitions),
            "BS_MODE": mode,
            "STREAMKIT_WEB_ENABLED": "false",
            "STREAMKIT_LOG_LEVEL": "WARNING",
        }
        procs = [
            WorkerProcess(
                "bench.scaleapp:app",
                {**env, "STREAMKIT_WORKDIR": f"{root}/w{i}"},
                Path(root) / f"w{i}.log",
            )
            for i in range(workers)
        ]
        reader = Reader(output)
        reading = asyncio.create_task(reader.run(latency=False))
        try:
            for p in procs:
                p.start()
            deadline = time.monotonic() + 180
            while await members(cluster, f"bp-{uid}") != workers:
                if not all(p.alive for p in procs) or time.monotonic() > deadline:
                    logs = "".join(p.log()[-2000:] for p in procs)
                    raise RuntimeError(f"{workers} workers not in a stable group:\n{logs}")
                await asyncio.sleep(0.2)
            pids = [p.proc.pid for p in procs if p.proc is not None]
            cpu_before = [cpu_seconds(pid) for pid in pids]
            started = time.monotonic()
            await preload(source, events, partitions=partitions)
            preloaded = time.monotonic() - started
            while reader.count < len(events):
                if not all(p.alive for p in procs) or time.monotonic() - started > 600:
                    raise RuntimeError(f"run stopped at {reader.count} of {len(events)}")
                await asyncio.sleep(0.02)
            elapsed = time.monotonic() - started
            cpu = [cpu_seconds(pid) - before for pid, before in zip(pids, cpu_before, strict=True)]
        finally:
            for p in procs:
                p.stop()
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
    n = len(events)
    return {
        "workers": workers,
        "partitions": partitions,
        "mode": mode,
        "events": n,
        "seconds": round(elapsed, 2),
        "writing_s": round(preloaded, 2),
        "events_per_s": round(n / elapsed),
        "events_per_s_per_worker": round(n / elapsed / workers),
        "cpu_us_per_event": round(1e6 * sum(cpu) / n, 1),
        "cpu_share_per_worker": round(statistics.fmean(cpu) / elapsed, 2),
        "load_1m": round(os.getloadavg()[0], 2),
    }


class _Metadata:
    """What the assignor reads of the cluster: partitions per topic."""

    def __init__(self, partitions: dict[str, int]) -> None:
        self._partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self._partitions[topic]))


def assignment_sizes(partitions: int, members: int) -> dict[str, Any]:
    """JoinGroup and SyncGroup sizes with the pure assignor: pipeline A's two input topics of
    `partitions` each, `members` members serving HTTP, each owning its share and holding
    state for it and for one standby share; then the leader's assign() time."""
    topics = {"app-source": partitions, "app-by-user-repartition": partitions}
    stateful = {"app-by-user-repartition"}
    metas = {}
    for i in range(members):
        owned = {TopicPartition(t, p) for t in topics for p in range(i, partitions, members)}
        standby = range((i + 1) % members, partitions, members)
        state = owned | {TopicPartition("app-by-user-repartition", p) for p in standby}
        assignor = StreamkitAssignor(
            lambda: stateful,
            1,
            functools.partial(set, owned),
            functools.partial(set, state),
            endpoint=f"10.0.{i // 250}.{i % 250}:6066",
        )
        metas[f"streamkit-{uuid.uuid4()}"] = assignor.metadata(sorted(topics))
    leader = StreamkitAssignor(lambda: stateful, 1, set, set)
    started = time.perf_counter()
    result = leader.assign(_Metadata(topics), metas)
    elapsed = time.perf_counter() - started
    join = [len(m.encode()) for m in metas.values()]
    sync = [len(a.encode()) for a in result.values()]
    return {
        "partitions_per_topic": partitions,
        "members": members,
        "join_bytes_per_member_max": max(join),
        "join_bytes_at_leader": sum(join),
        "sync_bytes_per_member_max": max(sync),
        "sync_bytes_total": sum(sync),
        "assign_ms": round(1000 * elapsed),
    }


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    events = make_events(args.events)
    rows = []
    async with Cluster() as cluster:
        await cluster.warm_up_groups()
        for rep in range(args.reps):
            for workers in args.workers:
                row = await one_run(cluster, workers, args.partitions, events, args.mode)
                row["rep"] = rep + 1
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4, 8]
    )
    parser.add_argument("--partitions", type=int, default=64)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--mode", default="per_worker", choices=["per_worker", "per_partition"])
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument(
        "--assignment",
        action="store_true",
        help="only the group messages' sizes at 1,000 partitions x 100 members (no broker)",
    )
    args = parser.parse_args()
    if args.assignment:
        print(json.dumps(assignment_sizes(1000, 100)))
        return
    rows = asyncio.run(run(args))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
