"""Pipeline B: a 60 s tumbling count per user over event time, exactly-once.

    python -m bench.windows [--events N] [--users U]

N pre-loaded purchases (event time in the value, 1 ms apart) → key_by(user) → window table
`tumbling(60)` + `count()` → window results. For each emit mode ("final": one result per
window when it closes; "update": one per event), in one invocation against one broker, with a
key_by pass-through (the same hop, no window) as the baseline: events/s from worker start
until the window stage has processed all N events. "output offsets" is the output topic's
end offsets (records plus transaction markers).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import streamkit as sk
from bench.common import PARTITIONS, Cluster, preload
from streamkit.runtime.worker import Worker

MODES = ("key_by only", "window final", "window update")


def make_purchases(n: int, users: int) -> list[bytes]:
    rng = random.Random(7)
    return [
        b'{"user_id":"u%d","amount":%.2f,"ts":%.3f}'
        % (rng.randrange(users), 1 + rng.random() * 99, 1_700_000_000 + i / 1000)
        for i in range(n)
    ]


def pipeline_b(uid: str, source: str, output: str, workdir: Path, mode: str) -> sk.App:
    app = sk.App(
        f"bw-{uid}", workdir=workdir, processing_guarantee="exactly_once", idle_timeout=1.0
    )
    src = app.topic(source, partitions=PARTITIONS, timestamp="ts")
    out = app.topic(output, partitions=PARTITIONS)
    if mode == "key_by only":

        @app.agent(app.stream(src).key_by("user_id"), sink=out)
        async def relay(stream: sk.Stream[Any]) -> Any:
            async for p in stream:
                yield p

        return app
    emit = "final" if mode == "window final" else "update"
    counts = app.window("per-user", sk.tumbling(60), sk.count(), emit=emit, output=out)

    @app.agent(app.stream(src).key_by("user_id"), state=[counts])
    async def count_per_user(stream: sk.Stream[Any]) -> None:
        async for p in stream:
            counts.add(p["user_id"])

    return app


async def run_mode(cluster: Cluster, source: str, n: int, mode: str) -> dict[str, Any]:
    uid = uuid.uuid4().hex[:6]
    output = f"bw-out-{uid}"
    await cluster.create_topics([output])
    with tempfile.TemporaryDirectory() as wd:
        worker = Worker(pipeline_b(uid, source, output, Path(wd), mode))
        started = time.monotonic()
        task = asyncio.create_task(worker.run(install_signal_handlers=False))
        try:
            while _window_stage_events(worker) < n:
                if task.done():
                    task.result()
                    raise RuntimeError("worker stopped early")
                await asyncio.sleep(0.05)
            elapsed = time.monotonic() - started
        finally:
            worker.request_stop()
            await task
    outputs = await cluster.count(output)
    return {"mode": mode, "events_per_s": n / elapsed, "seconds": elapsed, "outputs": outputs}


def _window_stage_events(worker: Worker) -> int:
    if worker.tasks is None:
        return 0
    return sum(
        t.events_in
        for t in worker.tasks.tasks.values()
        if t.stage.inputs[0].upstream is not None  # the stage after the key_by
    )


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    async with Cluster() as cluster:
        source = f"bw-in-{uuid.uuid4().hex[:6]}"
        await cluster.create_topics([source])
        await cluster.warm_up_groups()
        await preload(source, make_purchases(args.events, args.users))
        for mode in MODES:
            row = await run_mode(cluster, source, args.events, mode)
            print(row, flush=True)
            rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1_000)
    args = parser.parse_args(argv)
    rows = asyncio.run(run(args))
    base = rows[0]["events_per_s"]
    print(f"\nPipeline B, {args.events:,} events, {args.users:,} users, exactly-once\n")
    print("| pipeline | events/s | vs key_by only | output offsets |")
    print("|---|--:|--:|--:|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['events_per_s']:,.0f} | {r['events_per_s'] / base:.0%} "
            f"| {r['outputs']:,} |"
        )


if __name__ == "__main__":
    main()
