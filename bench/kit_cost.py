"""Instructions per event of a pipeline's streamkit app in the testing kit, no broker: the app
of `bench/peers/streamkit_app.py` (A, B or C, its real tasks, tables, windows and joins on
SQLite stores, on the kit's virtual clock) fed the pipeline's workload, counted by
`valgrind --tool=callgrind` over N and 3N events; the difference divided by 2N leaves out
start-up and the workload's own building. For a change too small for this machine's
wall-clock drift (10 to 20 % within minutes): run it in each checkout and compare.

    python -m bench.kit_cost [--pipeline A|B|C] [--events N] [--keys K]
    python -m bench.kit_cost --run N --pipeline A     (one pass, what valgrind runs)

The kit's own pumping (its memory topics, producer and group) is in the count too, the same
in both checkouts; the fetch path and the broker are not (`bench/compare.py` measures the
whole).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import re
import subprocess
import sys
import tempfile

import orjson

import streamkit as sk
from bench.common import peer_env
from bench.pipelines import workload
from streamkit.testing import AsyncTestDriver

CHUNK = 500  # records per send_many: the tasks see them as one fetch


async def run(pipeline: str, n: int, keys: int) -> int:
    """Feed `n` events of `pipeline` over `keys` users through its app; the number of output
    records."""
    work = workload(pipeline, n, keys)
    with tempfile.TemporaryDirectory() as state:
        # never dialled: the kit has its own topics
        os.environ.setdefault("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
        os.environ.update(
            peer_env(pipeline, "kit-in", "kit-out", "kit-cost", "at_least_once", 1.0, state)
        )
        app = importlib.import_module("bench.peers.streamkit_app").app
        async with AsyncTestDriver(app, workdir=state) as driver:
            stamps = work.timestamps
            for lo in range(0, n, CHUNK):
                items = [
                    sk.Record(
                        orjson.loads(work.values[i]),
                        timestamp_ms=None if stamps is None else stamps[i],
                    )
                    for i in range(lo, min(n, lo + CHUNK))
                ]
                await driver.send_many("kit-in", items)
            return len(driver.records("kit-out"))


def instructions(pipeline: str, n: int, keys: int) -> int:
    """callgrind's total instruction count of one `--run n` pass."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "callgrind.out")
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
             "-m", "bench.kit_cost", "--run", str(n), "--pipeline", pipeline, "--keys", str(keys)],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        with open(out) as f:
            totals = re.search(r"^totals:\s+(\d+)", f.read(), re.M)
        assert totals is not None, "callgrind wrote no totals"
        return int(totals.group(1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", default="A", choices=["A", "B", "C"])
    parser.add_argument("--events", type=int, default=4000, help="N (and 3N) events")
    parser.add_argument(
        "--keys",
        type=int,
        default=300,
        help="users (few: most reads hit the cache, as in a long run)",
    )
    parser.add_argument("--run", type=int, help="one pass of this many events, no valgrind")
    args = parser.parse_args(argv)
    if args.run is not None:
        print(asyncio.run(run(args.pipeline, args.run, args.keys)), "outputs")
        return
    n = args.events
    low, high = (instructions(args.pipeline, m, args.keys) for m in (n, 3 * n))
    print(
        f"pipeline {args.pipeline}, {args.keys} keys: {(high - low) / (2 * n):,.0f} "
        "instructions per event "
        f"({low:,} over {n:,} events, {high:,} over {3 * n:,})"
    )


if __name__ == "__main__":
    main()
