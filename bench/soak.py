"""The soak run: `apps.shop` (exactly-once) in worker processes, fed for MINUTES at the highest
rate they sustain, sampled every few seconds; it fails unless memory stays flat, lag bounded,
no rebalance happens, checkpoint durations stay steady and the output is exact.

    python -m bench.soak [--minutes 10] [--rate auto|N] [--workers 3] [--out FILE]
    make soak MINUTES=10                                 (starts its own broker if needed)

1. Probe (rate auto): 15 s steps at 500, 1000, 2000, ... events/s; a step is sustained when the
   backlog (events sent minus outputs read back under read_committed) ends under one second of
   input. The soak runs at 80 % of the last sustained step.
2. Soak: purchases of 40 users sent at that rate in 10 batches a second. Every SAMPLE seconds:
   each worker's RSS (/proc), its /metrics (consumer lag, rebalances, checkpoint duration
   histogram), the backlog. A reader follows the output all along: every user's counts must run
   1, 2, 3, ... (a gap is a lost event, a repeat a duplicate).
3. Drain, then the checks (printed, exit 1 if one fails) and a markdown table per minute.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

ROOT = Path(__file__).resolve().parent.parent
USERS = 40
SAMPLE = 5.0
PROBE_STEP = 15.0
LAG_SECONDS = 5.0  # bounded: the backlog never exceeds this many seconds of input
RSS_SLACK_MB, RSS_SLACK_PCT = 8.0, 5.0


def bootstrap() -> str:
    return os.environ["KAFKA_BOOTSTRAP_SERVERS"]


class Worker:
    def __init__(self, name: str, env: dict[str, str], logs: Path) -> None:
        self.log_path = logs / f"{name}.log"
        env = {**os.environ, **env, "STREAMKIT_WORKDIR": str(logs / name)}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamkit.cli", "worker", "apps.shop:app"],
                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.url: str | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def endpoint(self) -> str | None:
        if self.url is None:
            found = re.search(r"http endpoint (http://\S+)", self.log())
            self.url = found.group(1) if found else None
        return self.url

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status")
        if self.proc.poll() is not None or not status.exists():
            return 0.0
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def metrics(self) -> dict[str, float]:
        """Sums of the /metrics samples this harness reads, by name (+ le for buckets)."""
        url = self.endpoint()
        if url is None:
            return {}
        try:
            text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
        except OSError as exc:  # a worker that died: the checks catch it (exit code, output)
            print(f"{self.log_path.stem}: /metrics unreadable: {exc}")
            return {}
        out: dict[str, float] = collections.defaultdict(float)
        for line in text.splitlines():
            if line.startswith("#") or not line.startswith("streamkit_"):
                continue
            name_labels, _, value = line.rpartition(" ")
            name = name_labels.split("{", 1)[0]
            le = re.search(r'le="([^"]+)"', name_labels)
            out[f"{name}|{le.group(1)}" if le else name] += float(value)
        return out

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


@dataclass
class Oracle:
    count: collections.Counter[str] = field(default_factory=collections.Counter)
    spent: dict[str, float] = field(default_factory=lambda: collections.defaultdict(float))
    sent: int = 0


@dataclass
class Output:
    """Follows the output: per user the last count and total; gaps and repeats counted."""

    count: dict[str, int] = field(default_factory=dict)
    total: dict[str, float] = field(default_factory=dict)
    records: int = 0
    gaps: int = 0
    repeats: int = 0

    def add(self, value: dict[str, Any]) -> None:
        user, n = value["user_id"], value["count"]
        last = self.count.get(user, 0)
        if n <= last:
            self.repeats += 1
        elif n > last + 1:
            self.gaps += 1
        self.count[user] = max(n, last)
        self.total[user] = value["total"]
        self.records += 1


@dataclass
class Sample:
    at: float
    sent: int
    out: int
    rss: list[float]
    lag: float
    rebalances: float
    buckets: dict[str, float]
    ckpt_sum: float
    ckpt_count: float


class Soak:
    def __init__(self, uid: str, workers: int, logs: Path) -> None:
        self.uid = uid
        self.env = {
            "SHOP_APP_ID": f"soak-{uid}",
            "SHOP_PURCHASES": f"soak-purchases-{uid}",
            "SHOP_TOTALS": f"soak-totals-{uid}",
            "STREAMKIT_SESSION_TIMEOUT_MS": "10000",
        }
        self.logs = logs
        self.n_workers = workers
        self.workers: list[Worker] = []
        self.oracle = Oracle()
        self.output = Output()
        self.rng = random.Random(7)
        self.producer: Any = None
        self.samples: list[Sample] = []

    @property
    def backlog(self) -> int:
        return self.oracle.sent - self.output.records

    async def start(self) -> None:
        self.workers = [Worker(f"w{i}", self.env, self.logs) for i in range(self.n_workers)]
        deadline = time.monotonic() + 120
        while not all("assigned" in w.log() for w in self.workers):
            if time.monotonic() > deadline or any(w.proc.poll() is not None for w in self.workers):
                raise SystemExit(f"workers did not start; logs in {self.logs}")
            await asyncio.sleep(0.5)
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap(), linger_ms=5)
        await self.producer.start()

    async def follow(self) -> None:
        consumer = AIOKafkaConsumer(
            self.env["SHOP_TOTALS"], bootstrap_servers=bootstrap(), group_id=None,
            auto_offset_reset="earliest", isolation_level="read_committed",
        )  # fmt: skip
        await consumer.start()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                for recs in batch.values():
                    for r in recs:
                        self.output.add(orjson.loads(r.value))
        finally:
            await consumer.stop()

    async def send_for(self, rate: float, seconds: float) -> None:
        """Send at `rate` events/s for `seconds`, 10 batches a second, paced by the clock."""
        began, tick = time.monotonic(), 0
        topic = self.env["SHOP_PURCHASES"]
        while time.monotonic() - began < seconds:
            tick += 1
            due = int(rate * tick / 10) - int(rate * (tick - 1) / 10)
            for _ in range(due):
                user = f"user_{self.rng.randrange(USERS)}"
                amount = self.rng.randrange(1, 500) / 4
                self.oracle.count[user] += 1
                self.oracle.spent[user] += amount
                self.oracle.sent += 1
                value = {"user_id": user, "amount": amount, "ts": self.oracle.sent}
                await self.producer.send(topic, orjson.dumps(value))
            await asyncio.sleep(max(0.0, began + tick / 10 - time.monotonic()))

    async def drained(self, within: float) -> bool:
        deadline = time.monotonic() + within
        while self.backlog > 0 and time.monotonic() < deadline:  # noqa: ASYNC110 (a poll)
            await asyncio.sleep(0.5)
        return self.backlog <= 0

    async def step(self, rate: float) -> float | None:
        """One probe step: the rate achieved, or None if the sender or the workers fell behind
        (the sender reached under 95 % of `rate`, or a second of input is left unprocessed)."""
        sent, began = self.oracle.sent, time.monotonic()
        await self.send_for(rate, PROBE_STEP)
        achieved = (self.oracle.sent - sent) / (time.monotonic() - began)
        kept = achieved >= 0.95 * rate and self.backlog < achieved
        verdict = "ok" if kept else "behind"
        print(f"probe {rate:>7.0f}/s: sent {achieved:.0f}/s, backlog {self.backlog} ({verdict})")
        return achieved if kept else None

    async def probe(self) -> float:
        """The highest sustained rate, doubling from 500/s, then one step halfway back."""
        rate, good = 500.0, 0.0
        while await self.step(rate):
            good, rate = rate, rate * 2
        await self.drained(120)
        if good and await self.step((good + rate) / 2):
            good = (good + rate) / 2
        await self.drained(120)
        return max(250.0, 0.8 * good)

    async def sample(self) -> Sample:
        metrics = await asyncio.gather(*(asyncio.to_thread(w.metrics) for w in self.workers))
        merged: dict[str, float] = collections.defaultdict(float)
        for m in metrics:
            for k, v in m.items():
                merged[k] += v
        prefix = "streamkit_checkpoint_duration_seconds_bucket|"
        s = Sample(
            at=time.monotonic(), sent=self.oracle.sent, out=self.output.records,
            rss=[w.rss_mb() for w in self.workers], lag=merged["streamkit_consumer_lag"],
            rebalances=merged["streamkit_rebalances_total"] or merged["streamkit_rebalances"],
            buckets={k[len(prefix):]: v for k, v in merged.items() if k.startswith(prefix)},
            ckpt_sum=merged["streamkit_checkpoint_duration_seconds_sum"],
            ckpt_count=merged["streamkit_checkpoint_duration_seconds_count"],
        )  # fmt: skip
        self.samples.append(s)
        return s

    async def sampler(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(SAMPLE)

    def stop(self) -> list[int]:
        return [w.stop() for w in self.workers]


def quantile(a: Sample, b: Sample, q: float) -> float:
    """The q-quantile of checkpoint durations between samples a and b (bucket upper bound)."""
    total = b.ckpt_count - a.ckpt_count
    if total <= 0:
        return 0.0
    for le in sorted(b.buckets, key=lambda x: float(x)):
        if b.buckets[le] - a.buckets.get(le, 0.0) >= q * total:
            return float(le)
    return float("inf")


def per_minute(samples: list[Sample]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    start = samples[0]
    for s in samples[1:]:
        if s.at - start.at >= 60 or s is samples[-1]:
            seg = [x for x in samples if start.at <= x.at <= s.at]
            span = s.at - start.at
            count = s.ckpt_count - start.ckpt_count
            rows.append({
                "minute": len(rows) + 1, "in/s": (s.sent - start.sent) / span,
                "out/s": (s.out - start.out) / span,
                "rss MB": " / ".join(f"{r:.0f}" for r in s.rss),
                "lag max": max(x.lag for x in seg), "backlog max": max(x.sent - x.out for x in seg),
                "ckpt p50 ≤ s": quantile(start, s, 0.5), "ckpt p99 ≤ s": quantile(start, s, 0.99),
                "ckpt mean s": (s.ckpt_sum - start.ckpt_sum) / count if count else 0.0,
                "rebalances": int(s.rebalances - samples[0].rebalances),
            })  # fmt: skip
            start = s
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"{v:.3f}" if isinstance(v, float) and v < 10 else
                 f"{v:.0f}" if isinstance(v, float) else str(v) for v in r.values()]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def thirds(values: list[float]) -> tuple[float, float]:
    n = len(values) // 3
    return statistics.mean(values[n : 2 * n]), statistics.mean(values[2 * n :])


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


def checks(soak: Soak, rate: float, codes: list[int]) -> dict[str, tuple[bool, str]]:
    samples, out, oracle = soak.samples, soak.output, soak.oracle
    result: dict[str, tuple[bool, str]] = {}
    for i in range(len(soak.workers)):
        middle, last = thirds([s.rss[i] for s in samples])
        limit = max(RSS_SLACK_MB, middle * RSS_SLACK_PCT / 100)
        result[f"memory flat w{i}"] = (
            last - middle <= limit,
            f"RSS middle third {middle:.1f} MB, last third {last:.1f} MB (limit +{limit:.1f})",
        )
    worst = max(s.sent - s.out for s in samples)
    sent_rate = (samples[-1].sent - samples[0].sent) / (samples[-1].at - samples[0].at)
    result["lag bounded"] = (
        worst <= sent_rate * LAG_SECONDS,
        f"backlog max {worst} events ≤ {sent_rate * LAG_SECONDS:.0f} ({LAG_SECONDS:g} s of the "
        f"{sent_rate:.0f} events/s sent); "
        f"consumer lag max {max(s.lag for s in samples):.0f}",
    )
    rebalances = samples[-1].rebalances - samples[0].rebalances
    result["no rebalance"] = (rebalances == 0, f"{rebalances:.0f} assignments during the soak")
    means = [r["ckpt mean s"] for r in per_minute(samples)]
    segs = [samples[i : i + 2] for i in range(len(samples) - 1)]
    per_sample = [
        (b.ckpt_sum - a.ckpt_sum) / (b.ckpt_count - a.ckpt_count)
        for a, b in segs
        if b.ckpt_count > a.ckpt_count
    ]
    middle, last = thirds(per_sample)
    result["checkpoints steady"] = (
        last <= 2 * middle + 0.02,
        f"mean duration middle third {middle * 1000:.1f} ms, last third {last * 1000:.1f} ms; "
        f"per minute {', '.join(f'{m * 1000:.0f}' for m in means)} ms",
    )
    exact = (
        out.records == oracle.sent
        and out.gaps == out.repeats == 0
        and out.count == dict(oracle.count)
        and all(close(out.total[u], oracle.spent[u]) for u in oracle.count)
    )
    result["output exact"] = (
        exact,
        f"{out.records} outputs for {oracle.sent} events, {out.gaps} gaps, {out.repeats} repeats",
    )
    result["clean stops"] = (all(c == 0 for c in codes), f"exit codes {codes}")
    return result


async def run(args: argparse.Namespace) -> int:
    uid = uuid.uuid4().hex[:8]
    logs = Path(args.logs or f"/tmp/streamkit-soak-{uid}")
    os.makedirs(logs, exist_ok=True)
    soak = Soak(uid, args.workers, logs)
    await soak.start()
    follower = asyncio.create_task(soak.follow())
    codes: list[int] = []
    try:
        rate = await soak.probe() if args.rate == "auto" else float(args.rate)
        print(f"soak: {args.minutes:g} min at {rate:.0f} events/s, {args.workers} workers, "
              f"logs in {logs}")  # fmt: skip
        await soak.sample()
        sampler = asyncio.create_task(soak.sampler())
        await soak.send_for(rate, args.minutes * 60)
        sampler.cancel()
        await soak.sample()
        await soak.drained(120)
        await asyncio.sleep(2)
    finally:
        await soak.producer.stop()
        codes = soak.stop()
        follower.cancel()
        await asyncio.gather(follower, return_exceptions=True)
    result = checks(soak, rate, codes)
    report = [
        f"## Soak: {args.minutes:g} min of apps.shop, exactly-once, {args.workers} workers, "
        f"{rate:.0f} events/s",
        "",
        table(per_minute(soak.samples)),
        "",
        *(f"- {'PASS' if ok else 'FAIL'} {name}: {text}" for name, (ok, text) in result.items()),
    ]
    text = "\n".join(report) + "\n"
    print(text)
    if args.out:
        await asyncio.to_thread(Path(args.out).write_text, text)
    return 0 if all(ok for ok, _ in result.values()) else 1


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", default="auto", help="events/s, or auto (probe first)")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--out", default=None, help="write the markdown report here")
    parser.add_argument("--logs", default=None, help="worker logs and state (default /tmp)")
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
