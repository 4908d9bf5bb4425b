"""Where pipeline C's wall time goes in streamkit: checkpoints, their steps, the event loop.

    python -m bench.join_waits [--events N] [--guarantee exactly_once|at_least_once]

Runs `bench/peers/streamkit_app.py`'s pipeline C app in this process (no profiler) until the
output holds every pair and the input is committed, and reports: wall time, the process's CPU
as a share of it, each checkpoint's start and duration, the seconds summed per checkpoint step
over all tasks (snapshot: dirty rows to changelog records, on the loop; flush: waiting for the
broker to acknowledge a task's batches; write: the SQLite transaction, in a thread), and the
event loop's lag (a 10 ms sleep's overshoot: time the loop was busy or the process starved).
The steps are timed by wrapping their methods; nothing else is changed. The event loop's
thread is split by the kernel's scheduler statistics (/proc/self/task/<tid>/schedstat): on a
CPU, runnable but waiting for one (the machine's other processes), and the rest: asleep,
waiting for the broker or a thread.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import importlib
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import Cluster, peer_env
from bench.pipelines import workload
from streamkit.runtime.collector import RecordCollector
from streamkit.runtime.worker import Worker
from streamkit.state.task_tables import TaskTables

STEPS: dict[str, float] = {}


def timed(cls: Any, name: str, step: str) -> None:
    """Sum the seconds `cls.name` (a coroutine function or a plain one) takes into STEPS."""
    method = getattr(cls, name)
    if asyncio.iscoroutinefunction(method):

        @functools.wraps(method)
        async def waited(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            try:
                return await method(*args, **kwargs)
            finally:
                STEPS[step] = STEPS.get(step, 0.0) + time.monotonic() - started

        setattr(cls, name, waited)
    else:

        @functools.wraps(method)
        def ran(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            try:
                return method(*args, **kwargs)
            finally:
                STEPS[step] = STEPS.get(step, 0.0) + time.monotonic() - started

        setattr(cls, name, ran)


def schedstat() -> tuple[float, float]:
    """Seconds the event loop's thread ran on a CPU and waited runnable for one."""
    ran, waited, _ = (
        Path(f"/proc/self/task/{threading.get_native_id()}/schedstat").read_text().split()
    )
    return int(ran) / 1e9, int(waited) / 1e9


async def lag(samples: list[float]) -> None:
    while True:
        before = time.monotonic()
        await asyncio.sleep(0.01)
        samples.append(time.monotonic() - before - 0.01)


async def measure(args: argparse.Namespace) -> str:
    work = workload("C", args.events)
    async with Cluster() as cluster:
        source, output, group = await cluster.fresh_input("jw", work.values, work.timestamps)
        ends = await cluster.end_offsets(source)
        with tempfile.TemporaryDirectory() as state:
            os.environ.update(peer_env("C", source, output, group, args.guarantee, 1.0, state))
            worker = Worker(importlib.import_module("bench.peers.streamkit_app").app)
            started, cpu0, sched0 = time.monotonic(), time.process_time(), schedstat()
            running = asyncio.create_task(worker.run(install_signal_handlers=False))
            checkpoints: list[tuple[float, float]] = []

            def note(seconds: float) -> None:
                checkpoints.append((time.monotonic() - started - seconds, seconds))

            samples: list[float] = []
            ticking = asyncio.create_task(lag(samples))
            try:
                while True:
                    await asyncio.sleep(0.2)
                    if worker.checkpointer is not None:  # made at start: hooked before its first
                        worker.checkpointer.on_checkpoint = note
                    if running.done():
                        running.result()
                    committed = await cluster.committed(group, source)
                    if all(committed.get(p, -1) >= end for p, end in ends.items()) and (
                        await cluster.count(output) >= work.outputs
                    ):
                        break
                wall, cpu = time.monotonic() - started, time.process_time() - cpu0
                ran, runnable = (b - a for a, b in zip(sched0, schedstat(), strict=True))
            finally:
                ticking.cancel()
                worker.request_stop()
                await running
    n = args.events
    return "\n".join(
        [
            f"{n:,} events, {args.guarantee}: {wall:.1f} s, {n / wall:,.0f} events/s; CPU "
            f"{cpu:.1f} s = {cpu / wall:.0%} of the wall time, {cpu / n * 1e6:.1f} µs/event; "
            f"load {os.getloadavg()[0]:.1f}",
            "checkpoints (start s/duration s): "
            + " ".join(f"{s:.1f}/{d:.2f}" for s, d in checkpoints),
            f"in checkpoints: {sum(d for _, d in checkpoints):.1f} s; steps summed over tasks: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(STEPS.items())),
            f"event loop thread: on a CPU {ran:.1f} s ({ran / wall:.0%}), runnable waiting for a "
            f"CPU {runnable:.1f} s ({runnable / wall:.0%}), asleep {wall - ran - runnable:.1f} s "
            f"({(wall - ran - runnable) / wall:.0%})",
            f"event loop lag: mean {sum(samples) / max(1, len(samples)) * 1000:.0f} ms, "
            f"max {max(samples, default=0) * 1000:.0f} ms",
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--guarantee", default="exactly_once")
    args = parser.parse_args(argv)
    timed(TaskTables, "snapshot", "snapshot")
    timed(TaskTables, "write", "write")
    timed(RecordCollector, "flush", "flush")
    timed(RecordCollector, "flush_sealed", "flush")
    print(asyncio.run(measure(args)))


if __name__ == "__main__":
    main()
