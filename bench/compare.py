"""Side by side: pipelines A, B and C in streamkit, Faust, Quix Streams, Kafka Streams and the
raw aiokafka and confluent-kafka loops (C, a stream-stream join: streamkit and Kafka Streams),
with the raw two-hop loops (aiokafka; librdkafka, both guarantees: `raw two-hop rdkafka`) and
Kafka's perf tools as ceilings.

    python -m bench.compare [--events N] [--keys K] [--reps R] [--pipelines A,B]
                            [--systems a,b] [--guarantees g,h] [--commit-interval S]
                            [--paced-rate R] [--paced-events M] [--no-hardware]
                            [--warm-up W] [--json F] [--plot F.png]

This module is the systems (each one a command line reading the same environment, see
bench/peers/__init__.py; `streamkit xW` runs W streamkit worker processes in one group,
`kafka streams xT` one Kafka Streams JVM with T stream threads, `streamkit pure-python` one
worker reading record batches with aiokafka's reader only) and the command line;
bench/runner.py times and checks the runs, bench/observer.py reads the output and keeps its
time series (start-up, steady rate), bench/report.py tabulates and plots.

The default N (10,000,000) keeps every system's start-up to first output under 5 % of its run
on this kind of machine (docs/benchmarks.md has the start-ups it was chosen from). Faust,
Quix Streams and the one-hop confluent-kafka loop run from the pinned bench virtualenv
`.venv-bench` (the two-hop librdkafka loop from ours), Kafka Streams on the JDK.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from bench import flink
from bench.pipelines import USERS
from bench.report import markdown, summarize
from bench.runner import Plan, run_all

ROOT = Path(__file__).resolve().parent.parent
BENCH_PY = ROOT / ".venv-bench" / "bin" / "python"
KSTREAMS = Path.home() / ".cache" / "streamkit" / "kstreams-4.1.1"
BOTH = ("exactly_once", "at_least_once")
# start-up to first output * steady rate * 20, the largest over the systems (Kafka Streams x2
# exactly-once on a quiet machine, 2026-12-03: ~3.7 s * ~132,000 events/s): start-up < 5 % of
# every run (6,000,000 did until the observer stopped taking a third of the machine)
EVENTS = 10_000_000
SYSTEMS = ("streamkit", "raw aiokafka", "raw two-hop", "raw two-hop rdkafka",
           "raw confluent-kafka", "faust", "quix streams", "kafka streams", "flink")  # fmt: skip
RAW = {"raw aiokafka", "raw two-hop", "raw confluent-kafka"}  # pipeline A, at-least-once only
# pipeline A, both guarantees: a transactional librdkafka producer under exactly-once
NATIVE = "raw two-hop rdkafka"
JOINING = {"streamkit", "kafka streams", "quix streams", "flink"}  # pipeline C (the join)
# Faust does ~300 events/s: a run of the default N would take hours, so it runs only when
# named, with an N of its own (`--systems faust --events 100000`)
DEFAULT = [s for s in SYSTEMS if s != "faust"]
# the unreported first run's events at most (`runner.warm_up`)
WARM_UP = 1_000_000
WORKERS = re.compile(r"streamkit x(\d+)")  # `streamkit x2`: two worker processes
THREADS = re.compile(r"kafka streams x(\d+)")  # `kafka streams x2`: two stream threads
# streamkit reading every record batch with aiokafka's reader (STREAMKIT_PURE_PYTHON=1), not its
# own C one: the reference path, and what the native reader saves
PURE = "streamkit pure-python"


def processes(system: str) -> int:
    """How many processes a system runs as (streamkit xW: W workers in one group)."""
    match = WORKERS.fullmatch(system)
    return int(match.group(1)) if match else 1


def plain(system: str) -> str:
    """The system without its processes or threads (`streamkit x2` → `streamkit`)."""
    if WORKERS.fullmatch(system) or system == PURE:
        return "streamkit"
    if THREADS.fullmatch(system):
        return "kafka streams"
    return system


def command(system: str) -> list[str]:
    if threads := THREADS.fullmatch(system):  # one JVM, `num.stream.threads` of them
        return ["env", f"BENCH_THREADS={threads.group(1)}", *command("kafka streams")]
    if system == PURE:
        return ["env", "STREAMKIT_PURE_PYTHON=1", *command("streamkit")]
    system = plain(system)
    if system == "raw two-hop":
        return [sys.executable, "-m", "bench.peers.raw_twohop"]
    if system == "raw aiokafka":
        return [sys.executable, "-m", "bench.peers.raw_aiokafka"]
    if system == NATIVE:
        return [sys.executable, "-m", "bench.peers.raw_twohop_rdkafka"]
    if system == "streamkit":
        return [sys.executable, "-m", "bench.peers.streamkit_app"]
    if system == "raw confluent-kafka":
        return [str(BENCH_PY), str(ROOT / "bench/peers/raw_confluent.py")]
    if system == "faust":
        return [str(BENCH_PY), str(ROOT / "bench/peers/faust_app.py")]
    if system == "quix streams":
        return [str(BENCH_PY), str(ROOT / "bench/peers/quix_app.py")]
    if system == "kafka streams":
        classpath = f"{KSTREAMS / 'classes'}:{KSTREAMS / 'lib'}/*"
        return ["java", "-Xmx1g", "-cp", classpath, "Pipelines"]
    if system == "flink":  # bench/flink: builds on first use
        return flink.command()
    raise SystemExit(f"unknown system {system!r}")


def supports(system: str, pipeline: str, guarantee: str) -> bool:
    system = plain(system)
    if pipeline == "C":
        return system in JOINING
    if system == NATIVE:
        return pipeline == "A"
    return system not in RAW or (pipeline == "A" and guarantee == "at_least_once")


def prepare(systems: Sequence[str]) -> None:
    """The peers' software: the bench virtualenv, Kafka Streams' jars and classes."""
    ours = {"streamkit", "raw aiokafka", "raw two-hop", NATIVE, "kafka streams", "flink"}
    named = {plain(s) for s in systems}
    others = named - ours
    if others and not BENCH_PY.exists():
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_PY.parent.parent)], check=True)
    if others:
        subprocess.run(
            [str(BENCH_PY), "-m", "pip", "install", "-q", "-r", str(ROOT / "bench/peers.txt")],
            check=True,
        )
    if "flink" in named:
        flink.build()  # before any clock starts
    source = ROOT / "bench/kstreams/Pipelines.java"
    built = KSTREAMS / "classes" / "Pipelines.class"
    if "kafka streams" in named and (
        not built.exists() or built.stat().st_mtime < source.stat().st_mtime
    ):
        (KSTREAMS / "classes").mkdir(parents=True, exist_ok=True)
        pom = str(ROOT / "bench/kstreams/pom.xml")
        lib = f"-DoutputDirectory={KSTREAMS / 'lib'}"
        subprocess.run(["mvn", "-q", "-f", pom, "dependency:copy-dependencies", lib], check=True)
        javac = ["javac", "-cp", f"{KSTREAMS / 'lib'}/*", "-d", str(KSTREAMS / "classes")]
        subprocess.run([*javac, str(source)], check=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=EVENTS)
    parser.add_argument("--keys", type=int, default=USERS, help="users in A's and B's input")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--pipelines", type=lambda s: s.split(","), default=["A", "B"])
    parser.add_argument("--systems", type=lambda s: s.split(","), default=list(DEFAULT))
    parser.add_argument("--guarantees", type=lambda s: s.split(","), default=list(BOTH))
    parser.add_argument("--commit-interval", type=float, default=1.0)
    parser.add_argument("--paced-rate", type=float, default=10_000.0)
    parser.add_argument("--paced-events", type=int, default=0, help="0: no latency runs")
    parser.add_argument("--no-hardware", action="store_true", help="skip Kafka's perf tools")
    parser.add_argument(
        "--warm-up",
        type=int,
        default=None,
        help="events of an unreported first run (default: N/5, at most 1,000,000; 0: none)",
    )
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--plot", type=Path, default=None, help="a PNG (bench virtualenv)")
    args = parser.parse_args(argv)
    if args.warm_up is None:
        args.warm_up = min(WARM_UP, args.events // 5)
    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # a new topic's first fetches
    prepare(args.systems)
    runs_of = [
        (s, p, g)
        for p in args.pipelines
        for s in args.systems
        for g in args.guarantees
        if supports(s, p, g)
    ]
    load = os.getloadavg()[0]
    runs, hardware = asyncio.run(run_all(Plan(args, command, processes), runs_of))
    args.load = f"{load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    rows = summarize(runs)
    print(markdown(rows, hardware, vars(args)))
    if args.json is not None:
        meta = {k: vars(args)[k] for k in ("events", "keys", "reps", "commit_interval",
                                           "paced_rate", "paced_events", "load")}  # fmt: skip
        body = {**meta, "hardware": hardware, "summary": rows, "runs": [asdict(r) for r in runs]}
        args.json.write_text(json.dumps(body, indent=1))
        if args.plot is not None:
            plot = [str(BENCH_PY), "-m", "bench.report", str(args.json), str(args.plot)]
            subprocess.run(plot, check=True, cwd=ROOT)
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
