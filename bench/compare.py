"""Side by side: pipeline A in streamkit, Faust, Quix Streams, Kafka Streams and raw aiokafka.

    python -m bench.compare [--events N] [--reps R] [--systems a,b] [--guarantees g,h] [--json F]

Pipeline A: N purchases (JSON, ~100 bytes, 10,000 users, fixed seed, unkeyed, 4 partitions)
pre-loaded before the clock starts → repartition by user → per-user running sum in state →
`{"user_id", "total"}` per event, keyed by user. Each system is a separate process
(`bench/peers/*`; Faust and Quix Streams from the pinned bench virtualenv `.venv-bench`, Kafka
Streams on the JDK) with a fresh group, state directory and output topic per run; the same
commit interval for all. The observer, a read_committed consumer, times the run from launch
until every user's latest output total is the oracle's and the input is committed, notes 10 %
and 90 % of the output
for the steady rate, and checks every run against the oracle (exactly N outputs, each user's
last total = the sum of its amounts): a wrong run is reported as failed, not timed. CPU
seconds and peak RSS are the system process's own (/proc), read just before it is stopped.
Repetitions run in rotated order.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from bench.common import PARTITIONS, Cluster, Timeline, bootstrap, preload

ROOT = Path(__file__).resolve().parent.parent
BENCH_PY = ROOT / ".venv-bench" / "bin" / "python"
KSTREAMS = Path.home() / ".cache" / "streamkit" / "kstreams-4.1.1"
USERS = 10_000
SEED = 20241125
BOTH = ("exactly_once", "at_least_once")


def command(system: str) -> list[str]:
    if system == "raw aiokafka":
        return [sys.executable, "-m", "bench.peers.raw_aiokafka"]
    if system == "streamkit":
        return [sys.executable, "-m", "bench.peers.streamkit_a"]
    if system == "faust":
        return [str(BENCH_PY), str(ROOT / "bench/peers/faust_a.py")]
    if system == "quix streams":
        return [str(BENCH_PY), str(ROOT / "bench/peers/quix_a.py")]
    if system == "kafka streams":
        classpath = f"{KSTREAMS / 'classes'}:{KSTREAMS / 'lib'}/*"
        return ["java", "-Xmx1g", "-cp", classpath, "PipelineA"]
    raise SystemExit(f"unknown system {system!r}")


GUARANTEES = {"raw aiokafka": ("at_least_once",)}
SYSTEMS = ("streamkit", "raw aiokafka", "faust", "quix streams", "kafka streams")


def prepare(systems: Sequence[str]) -> None:
    """The peers' software: the bench virtualenv, Kafka Streams' jars and class."""
    if {"faust", "quix streams"} & set(systems) and not BENCH_PY.exists():
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_PY.parent.parent)], check=True)
        subprocess.run(
            [str(BENCH_PY), "-m", "pip", "install", "-q", "-r", str(ROOT / "bench/peers.txt")],
            check=True,
        )
    if "kafka streams" in systems and not (KSTREAMS / "classes" / "PipelineA.class").exists():
        (KSTREAMS / "classes").mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                "mvn",
                "-q",
                "-f",
                str(ROOT / "bench/kstreams/pom.xml"),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={KSTREAMS / 'lib'}",
            ],
            check=True,
        )
        subprocess.run(
            [
                "javac",
                "-cp",
                f"{KSTREAMS / 'lib'}/*",
                "-d",
                str(KSTREAMS / "classes"),
                str(ROOT / "bench/kstreams/PipelineA.java"),
            ],
            check=True,
        )


def purchases(n: int) -> tuple[list[bytes], dict[str, float]]:
    rng = random.Random(SEED)
    values: list[bytes] = []
    truth: dict[str, float] = {}
    for i in range(n):
        user = f"u{rng.randrange(USERS)}"
        amount = round(1 + rng.random() * 499, 2)
        truth[user] = truth.get(user, 0.0) + amount
        values.append(
            b'{"user_id":"%s","item":"sku-%05d","amount":%.2f,"qty":%d,"ts":%.3f}'
            % (
                user.encode(),
                rng.randrange(10_000),
                amount,
                1 + rng.randrange(9),
                1_700_000_000 + i / 1000,
            )
        )
    return values, truth


@dataclass
class Run:
    system: str
    guarantee: str
    rep: int
    ok: bool
    error: str = ""
    total_s: float | None = None
    steady_s: float | None = None
    e2e_rate: float | None = None
    steady_rate: float | None = None
    cpu_us_per_event: float | None = None
    peak_rss_mb: float | None = None
    duplicates: int = 0  # outputs beyond N (at-least-once allows them)


class Observer:
    """Reads the output (read_committed) from the start: count and each user's last total."""

    def __init__(self, topic: str, n: int, started: float, truth: dict[str, float]) -> None:
        self.n = n
        self.count = 0
        self.truth = truth
        self.right: set[str] = set()  # users whose latest total is the final one
        self.complete_at: float | None = None  # when every user's total was right
        self.last: dict[str, float] = {}
        self.line = Timeline(started)
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap(),
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            group_id=None,
        )

    async def run(self) -> None:
        await self._consumer.start()
        previous = (self.line.started, 0)
        try:
            while True:
                batch = await self._consumer.getmany(timeout_ms=100)
                truth, right = self.truth, self.right
                for records in batch.values():
                    for rec in records:
                        value = orjson.loads(rec.value)
                        user, total = value["user_id"], value["total"]
                        self.last[user] = total
                        if abs(total - truth[user]) <= 1e-6 * max(truth[user], 1):
                            right.add(user)
                        else:
                            right.discard(user)
                    self.count += len(records)
                if self.complete_at is None and len(right) == len(truth):
                    self.complete_at = time.monotonic()
                now = (time.monotonic(), self.count)
                self.line.note_count(previous, now, self.n)
                previous = now
        finally:
            await self._consumer.stop()


def proc_usage(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) and peak RSS (MB) of a running process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            rss = int(line.split()[1]) / 1024
    return cpu, rss


async def run_one(
    cluster: Cluster,
    system: str,
    guarantee: str,
    rep: int,
    source: str,
    ends: dict[int, int],
    truth: dict[str, float],
    n: int,
    commit_interval: float,
    logs: Path,
) -> Run:
    uid = uuid.uuid4().hex[:8]
    group, output = f"peer-{uid}", f"peer-out-{uid}"
    await cluster.create_topics([output])
    result = Run(system, guarantee, rep, ok=False)
    with tempfile.TemporaryDirectory(prefix="peer-") as state:
        env = {
            **os.environ,
            "BENCH_BOOTSTRAP": bootstrap(),
            "BENCH_INPUT": source,
            "BENCH_OUTPUT": output,
            "BENCH_GROUP": group,
            "BENCH_GUARANTEE": guarantee,
            "BENCH_COMMIT_INTERVAL": str(commit_interval),
            "BENCH_STATE_DIR": state,
        }
        log = (logs / f"{system.replace(' ', '-')}-{guarantee}-{rep}.log").open("wb")
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *command(system), env=env, cwd=ROOT, stdout=log, stderr=log
        )
        observer = Observer(output, n, started, truth)
        reading = asyncio.create_task(observer.run())
        within = max(180.0, n / 500)
        try:
            while True:
                if proc.returncode is not None:
                    raise RuntimeError(f"exited with {proc.returncode} (see {log.name})")
                if time.monotonic() - started > within:
                    raise RuntimeError(f"not done within {within:.0f} s ({observer.count} out)")
                if observer.complete_at is not None:
                    committed = await cluster.committed(group, source)
                    if all(committed.get(p, -1) >= end for p, end in ends.items()):
                        done = time.monotonic()
                        break
                await asyncio.sleep(0.05)
            cpu, rss = proc_usage(proc.pid)
            await asyncio.sleep(1.0)  # any duplicate would show up now
            result.ok, result.error = check(observer, truth, n, guarantee)
            result.duplicates = observer.count - n
            if result.ok:
                line = observer.line
                result.total_s = done - started
                result.e2e_rate = n / result.total_s
                if line.p10 is not None and line.p90 is not None and line.p90 > line.p10:
                    result.steady_s = line.p90 - line.p10
                    result.steady_rate = 0.8 * n / result.steady_s
                result.cpu_us_per_event = cpu / n * 1e6
                result.peak_rss_mb = rss
        except RuntimeError as exc:
            result.error = str(exc)
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            log.close()
    status = f"{result.e2e_rate:,.0f} events/s" if result.ok else f"FAILED: {result.error}"
    print(f"rep {rep} {system} {guarantee}: {status}", flush=True)
    return result


def check(observer: Observer, truth: dict[str, float], n: int, guarantee: str) -> tuple[bool, str]:
    """Exactly N outputs under exactly-once (at least N under at-least-once), and every user's
    last total equal to the sum of its amounts (state counted each event once)."""
    if observer.count < n or (guarantee == "exactly_once" and observer.count != n):
        return False, f"{observer.count} outputs, expected exactly {n}"
    wrong = [u for u, t in truth.items() if abs(observer.last.get(u, -1.0) - t) > 1e-6 * max(t, 1)]
    if wrong:
        return False, f"{len(wrong)} users' last totals differ from the oracle (e.g. {wrong[0]})"
    return True, ""


async def run_all(args: argparse.Namespace) -> list[Run]:
    values, truth = purchases(args.events)
    logs = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    print(f"logs in {logs}", flush=True)
    runs = []
    async with Cluster() as cluster:
        source = f"peer-in-{uuid.uuid4().hex[:8]}"
        await cluster.create_topics([source])
        await cluster.warm_up_groups()
        await preload(source, values)
        ends = await cluster.end_offsets(source)
        plan = [
            (s, g) for s in args.systems for g in args.guarantees if g in GUARANTEES.get(s, BOTH)
        ]
        for rep in range(1, args.reps + 1):
            turn = (rep - 1) % len(plan)
            for system, guarantee in plan[turn:] + plan[:turn]:
                runs.append(
                    await run_one(
                        cluster,
                        system,
                        guarantee,
                        rep,
                        source,
                        ends,
                        truth,
                        args.events,
                        args.commit_interval,
                        logs,
                    )
                )
    return runs


def summarize(runs: Sequence[Run]) -> list[dict[str, Any]]:
    rows = []
    keys = sorted({(r.system, r.guarantee) for r in runs}, key=lambda k: (k[1], k[0]))
    for system, guarantee in keys:
        mine = [r for r in runs if (r.system, r.guarantee) == (system, guarantee)]
        ok = [r for r in mine if r.ok]

        def med(attr: str, ok: list[Run] = ok) -> float | None:
            vals = [getattr(r, attr) for r in ok if getattr(r, attr) is not None]
            return statistics.median(vals) if vals else None

        rates = [r.e2e_rate for r in ok if r.e2e_rate is not None]
        rows.append(
            {
                "system": system,
                "guarantee": guarantee,
                "ok": len(ok),
                "runs": len(mine),
                "e2e": med("e2e_rate"),
                "steady": med("steady_rate"),
                "spread": (min(rates), max(rates)) if rates else None,
                "cpu_us": med("cpu_us_per_event"),
                "rss": med("peak_rss_mb"),
                "duplicates": sum(r.duplicates for r in ok),
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    def num(v: float | None, fmt: str = ",.0f") -> str:
        return "—" if v is None else format(v, fmt)

    ref = {r["guarantee"]: r["e2e"] for r in rows if r["system"] == "streamkit"}
    lines = [
        f"Pipeline A, {args.events:,} events, {USERS:,} users, {PARTITIONS} partitions, commit "
        f"interval {args.commit_interval:g} s, {args.reps} reps (median, min-max)",
        "",
        "| guarantee | system | ok | end-to-end events/s | spread | steady events/s "
        "| streamkit / system | CPU µs/event | peak RSS MB | duplicate outputs |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        spread = "—" if r["spread"] is None else f"{r['spread'][0]:,.0f}-{r['spread'][1]:,.0f}"
        mine = ref.get(r["guarantee"])
        ratio = f"{mine / r['e2e']:.2f}x" if mine and r["e2e"] else "—"
        lines.append(
            f"| {r['guarantee']} | {r['system']} | {r['ok']}/{r['runs']} | {num(r['e2e'])} "
            f"| {spread} | {num(r['steady'])} | {ratio} | {num(r['cpu_us'], '.1f')} "
            f"| {num(r['rss'])} | {r['duplicates']} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--systems", type=lambda s: s.split(","), default=list(SYSTEMS))
    parser.add_argument("--guarantees", type=lambda s: s.split(","), default=list(BOTH))
    parser.add_argument("--commit-interval", type=float, default=1.0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    prepare(args.systems)
    runs = asyncio.run(run_all(args))
    rows = summarize(runs)
    print(markdown(rows, args))
    if args.json is not None:
        meta = {"events": args.events, "reps": args.reps, "commit_interval": args.commit_interval}
        args.json.write_text(
            json.dumps({**meta, "summary": rows, "runs": [asdict(r) for r in runs]}, indent=1)
        )
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
