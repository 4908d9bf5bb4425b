"""Where a pipeline's time goes: the streamkit peer in-process under cProfile (CPU clock).

    python -m bench.profile [--events N] [--pipeline A|B|C] [--guarantee exactly_once|at_least_once]
                            [--top K]

Pre-loads the pipeline's input (bench/pipelines.py), runs `bench/peers/streamkit_app.py`'s app
in this process with the profiler on until the output holds N records and the input is
committed, then prints CPU µs per event for the functions with the most own time, and the
share of the total. The profiler roughly doubles the cost of a Python call, so read the shares,
not the absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import os
import pstats
import tempfile
import time
from collections.abc import Sequence

from bench.common import Cluster, peer_env
from bench.pipelines import workload
from streamkit.runtime.worker import Worker


async def profile(args: argparse.Namespace) -> pstats.Stats:
    work = workload(args.pipeline, args.events)
    async with Cluster() as cluster:
        source, output, group = await cluster.fresh_input("prof", work.values, work.timestamps)
        ends = await cluster.end_offsets(source)
        with tempfile.TemporaryDirectory() as state:
            os.environ.update(
                peer_env(args.pipeline, source, output, group, args.guarantee, 1.0, state)
            )
            peer = importlib.import_module("bench.peers.streamkit_app")
            worker = Worker(peer.app)
            profiler = cProfile.Profile(time.process_time)
            profiler.enable()
            running = asyncio.create_task(worker.run(install_signal_handlers=False))
            try:
                while True:
                    if running.done():
                        running.result()
                    committed = await cluster.committed(group, source)
                    if all(committed.get(p, -1) >= end for p, end in ends.items()) and (
                        await cluster.count(output) >= work.outputs  # C: a stage after the first
                    ):
                        break
                    await asyncio.sleep(0.1)
            finally:
                worker.request_stop()
                await running
                profiler.disable()
    return pstats.Stats(profiler)


def report(stats: pstats.Stats, events: int, top: int) -> str:
    rows = []
    raw = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, tt, _, _) in raw.values())
    for (path, line, name), (_, calls, tt, _, _) in raw.items():
        where = path.split("site-packages/")[-1].split("/work/main/")[-1]
        rows.append((tt, calls, f"{where}:{line} {name}"))
    rows.sort(reverse=True)
    lines = [
        f"CPU {total / events * 1e6:.1f} µs per event under the profiler ({events:,} events)",
        "",
        "| own CPU µs/event | share | calls/event | function |",
        "|--:|--:|--:|---|",
    ]
    for tt, calls, where in rows[:top]:
        lines.append(
            f"| {tt / events * 1e6:.2f} | {tt / total:.1%} | {calls / events:.2f} | `{where}` |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--pipeline", default="A", choices=("A", "B", "C"))
    parser.add_argument("--guarantee", default="exactly_once")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    stats = asyncio.run(profile(args))
    print(report(stats, args.events, args.top))


if __name__ == "__main__":
    main()
