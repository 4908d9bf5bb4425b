"""Fan-out benchmark: three agents on one topic in one app (the topic fetched and decoded once,
every agent fed in the same task) against three separate apps each reading the topic with one
agent, on the same pre-loaded input.

    python -m bench.fanout [--events N] [--reps R] [--json PATH] [--smoke]

Each agent yields a small dict per event to one shared output topic, so a run is done when the
output holds 3·N records and every group involved committed the input to its end. Both forms
run in this process (the three apps as three workers at once), so the process CPU time is the
cost of each form. Runs alternate; each has fresh groups and a fresh output topic. A run whose
output does not hold exactly 3·N records is reported as FAILED and not timed. Needs
KAFKA_BOOTSTRAP_SERVERS (`scripts/localkafka.py run -- ...` starts a broker).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

import streamkit as sk
from bench.common import PARTITIONS, Cluster, make_events, preload
from streamkit.runtime.worker import Worker

FAN_OUT = "one app, three agents"
SEPARATE = "three apps, one agent each"
AGENTS = 3
COMMIT_EVERY = 1.0


@dataclass
class Run:
    form: str
    rep: int
    ok: bool
    error: str
    wall_s: float | None = None
    cpu_s: float | None = None
    cpu_us_per_event: float | None = None  # per input event


def _agent(app: sk.App, src: sk.Topic, out: sk.Topic, name: str) -> None:
    @app.agent(src, sink=out, name=name)
    async def body(stream: sk.Stream[Any]) -> AsyncIterator[dict[str, Any]]:
        async for p in stream:
            yield {"agent": name, "user_id": p["user_id"], "amount": p["amount"]}


def apps_for(form: str, uid: str, source: str, output: str, workdir: Path) -> list[sk.App]:
    if form == FAN_OUT:
        app = sk.App(f"bench-fan-{uid}", commit_interval=COMMIT_EVERY, workdir=workdir)
        src = app.topic(source, partitions=PARTITIONS)
        out = app.topic(output, partitions=PARTITIONS)
        for i in range(AGENTS):
            _agent(app, src, out, f"agent{i}")
        return [app]
    apps = []
    for i in range(AGENTS):
        app = sk.App(f"bench-sep{i}-{uid}", commit_interval=COMMIT_EVERY, workdir=workdir)
        src = app.topic(source, partitions=PARTITIONS)
        out = app.topic(output, partitions=PARTITIONS)
        _agent(app, src, out, f"agent{i}")
        apps.append(app)
    return apps


async def one_run(
    cluster: Cluster, form: str, rep: int, source: str, ends: dict[int, int], within: float
) -> Run:
    uid = uuid.uuid4().hex[:8]
    output = f"bench-fan-out-{uid}"
    await cluster.create_topics([output])
    expect = AGENTS * sum(ends.values())
    with tempfile.TemporaryDirectory(prefix="bench-fan-") as workdir:
        apps = apps_for(form, uid, source, output, Path(workdir))
        for app in apps:
            await cluster.create_topics([app.dlq.name], partitions=1)
        workers = [Worker(app) for app in apps]
        cpu0, wall0 = time.process_time(), time.monotonic()
        tasks = [asyncio.create_task(w.run(install_signal_handlers=False)) for w in workers]
        error = ""
        try:
            async with asyncio.timeout(within):
                while True:
                    for task in tasks:
                        if task.done():
                            raise RuntimeError(f"a worker stopped: {task.exception()!r}")
                    count = await cluster.count(output)
                    committed = [await cluster.committed(a.id, source) for a in apps]
                    done = all(
                        all(c.get(p, -1) >= end for p, end in ends.items()) for c in committed
                    )
                    if count >= expect and done:
                        break
                    await asyncio.sleep(0.05)
        except (TimeoutError, RuntimeError) as exc:
            error = str(exc) or f"not done within {within:.0f} s"
        wall, cpu = time.monotonic() - wall0, time.process_time() - cpu0
        for w in workers:
            w.request_stop()
        await asyncio.gather(*tasks, return_exceptions=True)
    count = await cluster.count(output)
    if not error and count != expect:
        error = f"output holds {count} records, expected exactly {expect}"
    if error:
        return Run(form, rep, False, error)
    n = sum(ends.values())
    return Run(form, rep, True, "", wall, cpu, cpu / n * 1e6)


async def run_all(events: int, reps: int) -> list[Run]:
    runs = []
    async with Cluster() as cluster:
        source = f"bench-fan-in-{uuid.uuid4().hex[:8]}"
        await cluster.create_topics([source])
        await cluster.warm_up_groups()
        await preload(source, make_events(events))
        ends = await cluster.end_offsets(source)
        within = max(120.0, events / 500)
        for rep in range(1, reps + 1):
            forms = (FAN_OUT, SEPARATE) if rep % 2 else (SEPARATE, FAN_OUT)
            for form in forms:
                run = await one_run(cluster, form, rep, source, ends, within)
                state = f"{run.wall_s:.2f} s, {run.cpu_s:.2f} s CPU" if run.ok else run.error
                print(f"rep {rep} {form}: {state}", flush=True)
                runs.append(run)
    return runs


def report(events: int, runs: list[Run]) -> str:
    lines = [
        f"Fan-out, {events:,} events, {PARTITIONS} partitions, {AGENTS} agents",
        "",
        "| form | ok | wall s (median) | CPU s (median) | CPU µs per input event |",
        "|---|--:|--:|--:|--:|",
    ]
    medians = {}
    for form in (FAN_OUT, SEPARATE):
        ok = [r for r in runs if r.form == form and r.ok]
        n = len([r for r in runs if r.form == form])
        if not ok:
            lines.append(f"| {form} | 0/{n} | — | — | — |")
            continue
        wall = statistics.median(r.wall_s or 0 for r in ok)
        cpu = statistics.median(r.cpu_s or 0 for r in ok)
        medians[form] = (wall, cpu)
        lines.append(
            f"| {form} | {len(ok)}/{n} | {wall:.2f} | {cpu:.2f} | {cpu / events * 1e6:.1f} |"
        )
    if len(medians) == 2:
        (fw, fc), (sw, sc) = medians[FAN_OUT], medians[SEPARATE]
        lines += ["", f"three apps ÷ fan-out: CPU {sc / fc:.2f}x, wall {sw / fw:.2f}x"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--smoke", action="store_true", help="2,000 events, one rep")
    args = parser.parse_args(argv)
    events, reps = (2000, 1) if args.smoke else (args.events, args.reps)
    runs = asyncio.run(run_all(events, reps))
    print(report(events, runs))
    if args.json is not None:
        doc = {"benchmark": "fanout", "events": events, "runs": [asdict(r) for r in runs]}
        args.json.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
