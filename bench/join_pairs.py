"""Which of pipeline C's pairs a peer finds: Quix Streams' `join_interval` against the oracle.

    python -m bench.join_pairs [--events N] [--guarantee at_least_once|exactly_once] [--json PATH]

`bench.compare` judges a run by the oracle and waits for every pair; a peer that misses pairs
for good would only time out there. This bench runs the Quix Streams program of pipeline C
(`bench/peers/quix_app.py`, in .venv-bench) until its output stops growing for 10 s (after its
first record), reads the output (read_committed) to the end offsets and reports the pairs
found, missed and extra, split by which record came first in event time, with the events/s
and CPU µs per event up to the last output. Quix Streams looks for partners only backwards in
time from the record that arrives, so a pair is found only if its earlier record (in event
time) arrived first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer

from bench.common import Cluster, bootstrap, peer_env
from bench.compare import BENCH_PY, ROOT, prepare
from bench.observer import proc_usage
from bench.pipelines import workload


async def read_pairs(topic: str) -> list[tuple[int, int]]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap(),
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        group_id=None,
    )
    await consumer.start()
    pairs = []
    try:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
        ends = await consumer.end_offsets(list(consumer.assignment()))
        while True:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for rec in records:
                    value = orjson.loads(rec.value)
                    pairs.append((int(value["click"]), int(value["purchase"])))
            positions = {tp: await consumer.position(tp) for tp in ends}
            if all(positions[tp] >= end for tp, end in ends.items()):
                return pairs
    finally:
        await consumer.stop()


async def measure(args: argparse.Namespace) -> dict[str, object]:
    work = workload("C", args.events)
    async with Cluster() as cluster:
        source, output, group = await cluster.fresh_input("jp", work.values, work.timestamps)
        with tempfile.TemporaryDirectory(prefix="join-pairs-") as state:
            env = {
                **os.environ,
                **peer_env("C", source, output, group, args.guarantee, 1.0, state),
            }
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                str(BENCH_PY), str(ROOT / "bench/peers/quix_app.py"), env=env
            )
            try:
                count, last_change, cpu = 0, started, 0.0
                while count == 0 or time.monotonic() - last_change < 10.0:
                    if proc.returncode is not None:
                        raise SystemExit(f"the peer exited with {proc.returncode}")
                    if time.monotonic() - started > 600:
                        raise SystemExit("no output within 600 s")
                    await asyncio.sleep(0.5)
                    now = await cluster.count(output)
                    if now != count:
                        count, last_change = now, time.monotonic()
                        cpu = proc_usage([proc.pid])[0]
            finally:
                proc.terminate()
                await proc.wait()
    pairs = await read_pairs(output)
    truth, found = set(work.truth), set(pairs)
    missed = truth - found
    seconds = last_change - started
    result = {
        "events": args.events, "guarantee": args.guarantee, "pairs": len(truth),
        "found": len(truth & found), "missed": len(missed), "extra": len(found - truth),
        "duplicates": len(pairs) - len(found),
        "missed_click_first": sum(1 for c, p in missed if c < p),
        "missed_purchase_first": sum(1 for c, p in missed if c > p),
        "seconds_to_last_output": seconds, "events_per_s": args.events / seconds,
        "cpu_us_per_event": cpu / args.events * 1e6, "load": os.getloadavg(),
    }  # fmt: skip
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--guarantee", default="at_least_once")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    prepare(["quix streams"])
    result = asyncio.run(measure(args))
    print(json.dumps(result, indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
