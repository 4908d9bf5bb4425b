"""Peak RSS of pipeline C's whole app with up to 1,000,000 records buffered in its join.

    python -m bench.join_memory [--events 1000000] [--marks 100000,500000,1000000]
                                [--guarantee exactly_once|at_least_once] [--json PATH]

The real pipeline C program (`bench/peers/streamkit_app.py`: filter, two repartition hops, the
inner join `within=600, grace=3600`) runs as its own process on an input of clicks only: no
purchase ever arrives, so every click stays buffered in the join's state (its event times,
4 ms apart, span less than the 70 minutes after which a click is final). The bench samples the
process's RSS every 0.2 s and reports, when the join stage has committed 100k, 500k and 1M
of its input (every record it took is then buffered), the process's peak RSS so far. A join
state held in memory would grow with the records; the table's bounded cache (rows in SQLite)
and the 16-byte index keep it nearly flat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench.common import Cluster, peer_env
from bench.pipelines import EVENT_TIME_BASE_MS, PARTITIONS, USERS

STEP_MS = 4  # 1,000,000 clicks span 4,000 s < within + grace (4,200 s): none is ever final


def clicks(n: int) -> tuple[list[bytes], list[int]]:
    values = [
        b'{"kind":"click","id":%d,"user_id":"u%d","ts":%.3f}'
        % (i, (i * 7919 % (USERS // PARTITIONS)) * PARTITIONS + i % PARTITIONS,
           (EVENT_TIME_BASE_MS + i * STEP_MS) / 1000)
        for i in range(n)
    ]  # fmt: skip
    return values, [EVENT_TIME_BASE_MS + i * STEP_MS for i in range(n)]


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of a process, MB."""
    now = peak = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            now = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) / 1024
    return now, peak


async def measure(args: argparse.Namespace) -> dict[str, object]:
    values, stamps = clicks(args.events)
    marks = sorted(args.marks)
    rows: list[dict[str, float]] = []
    async with Cluster() as cluster:
        source, output, group = await cluster.fresh_input("jm", values, stamps)
        with tempfile.TemporaryDirectory(prefix="join-memory-") as state:
            env = {
                **os.environ,
                **peer_env("C", source, output, group, args.guarantee, 1.0, state),
                # the default cache bound, not the one the comparison's C app sets: this
                # measures how memory holds with the defaults as records pile up
                "BENCH_CACHE_ENTRIES": "",
            }
            started = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.peers.streamkit_app", env=env
            )
            try:
                next_look = 0.0
                while marks:
                    if proc.returncode is not None:
                        raise SystemExit(f"the app exited with {proc.returncode}")
                    if time.monotonic() - started > args.timeout:
                        raise SystemExit(f"not done within {args.timeout} s: {rows}")
                    await asyncio.sleep(0.2)
                    now_mb, peak_mb = rss_mb(proc.pid)
                    if time.monotonic() < next_look:
                        continue
                    next_look = time.monotonic() + 1.0
                    offsets = await cluster.admin.list_consumer_group_offsets(group)
                    joined = sum(m.offset for tp, m in offsets.items() if tp.topic != source)
                    while marks and joined >= marks[0]:
                        mark = marks.pop(0)
                        rows.append({"buffered": mark, "committed": joined, "rss_mb": now_mb,
                                     "peak_rss_mb": peak_mb,
                                     "seconds": time.monotonic() - started})  # fmt: skip
                        took = rows[-1]["seconds"]
                        print(f"{mark:>9,} buffered ({joined:,} taken): RSS {now_mb:.0f} MB, "
                              f"peak {peak_mb:.0f} MB, {took:.0f} s", flush=True)  # fmt: skip
                out = await cluster.count(output)
            finally:
                proc.terminate()
                await proc.wait()
    load = os.getloadavg()
    return {"events": args.events, "guarantee": args.guarantee, "marks": rows,
            "outputs": out, "load": load}  # fmt: skip


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--marks",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[100_000, 500_000, 1_000_000],
    )
    parser.add_argument("--guarantee", default="exactly_once")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args))
    print(json.dumps(result, indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
