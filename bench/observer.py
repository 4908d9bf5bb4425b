"""The side-by-side harness's observer: reads a run's committed output (judged by the oracle
later, `Observer.judge`) and keeps the time series of the output count, from which start-up
and the steady rate are taken.

Start-up is the time from the system's launch to its first committed output (process start,
client start, group join, restore, the first commit). The steady rate is the slope of the
output count over the middle of the output phase: the count, sampled as the observer reads it,
is resampled onto a regular grid and fitted by least squares between 10 % and 90 % of the time
from the first output to the last. Under exactly-once the count is a staircase (one step per
transaction, every commit interval); a fit over a span of many steps follows the staircase's
mean slope, where the 10 %-90 % crossing times of the output count land on arbitrary steps. A
middle shorter than MIN_INTERVALS commit intervals is too short to fit: no steady rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka.structs import TopicPartition

from bench.common import PARTITIONS, bootstrap
from bench.pipelines import Oracle, Workload
from streamkit.aiokafka_internals import FetchSession, RawClient, input_records
from streamkit.runtime.fetch import MAX_WAIT_MS, MIN_BYTES, PARTITION_BYTES, RESPONSE_BYTES

GRID_S = 0.1  # resampling step of the output count (s)
MIN_INTERVALS = 5  # the fitted middle spans at least this many commit intervals


@dataclass
class Series:
    """The output count over time: (seconds since launch, outputs read so far)."""

    started: float
    points: list[tuple[float, int]] = field(default_factory=list)

    def note(self, now: float, count: int) -> None:
        if not self.points or count != self.points[-1][1]:
            self.points.append((now - self.started, count))

    def startup(self) -> float | None:
        """Seconds from launch to the first output."""
        return next((t for t, c in self.points if c > 0), None)

    def count_at(self, t: float, start: int = 0) -> tuple[int, int]:
        """The count at time t (the last sample at or before t) and that sample's index,
        searching from `start`."""
        i = start
        while i + 1 < len(self.points) and self.points[i + 1][0] <= t:
            i += 1
        return (self.points[i][1] if self.points and self.points[i][0] <= t else 0), i

    def steady_rate(self, commit_interval: float) -> float | None:
        """Outputs/s: least-squares slope of the count between 10 % and 90 % of the output
        phase, on a GRID_S grid; None when that middle is under MIN_INTERVALS commits."""
        first, last = self.startup(), (self.points[-1][0] if self.points else None)
        if first is None or last is None or last <= first:
            return None
        a, b = first + 0.1 * (last - first), first + 0.9 * (last - first)
        if b - a < MIN_INTERVALS * commit_interval:
            return None
        ts: list[float] = []
        cs: list[int] = []
        i, t = 0, a
        while t <= b:
            c, i = self.count_at(t, i)
            ts.append(t)
            cs.append(c)
            t += GRID_S
        mt, mc = sum(ts) / len(ts), sum(cs) / len(cs)
        var = sum((x - mt) ** 2 for x in ts)
        return sum((x - mt) * (y - mc) for x, y in zip(ts, cs, strict=True)) / var

    def sampled(self, every: float = 1.0) -> list[tuple[float, int]]:
        """The series every `every` seconds (for the JSON results and plots)."""
        if not self.points:
            return []
        out, i, t = [], 0, 0.0
        while t <= self.points[-1][0] + every:
            c, i = self.count_at(t, i)
            out.append((round(t, 3), c))
            t += every
        return out


class Observer:
    """Reads the output (read_committed) from the start; keeps the count's time series and
    the record batches read, each with the time it was read. `judge` puts them through the
    oracle later, as if it had been done as they were read: when the oracle became complete
    and when each input event's answer was read (the paced runs' latency) come from those
    times. The observer shares the machine with the system it measures, so its reading has to
    be cheap: judging each output as it came (aiokafka's consumer, orjson, the oracle) took
    0.66 of a core at 124,000 outputs/s, a third of this 2-core machine; librdkafka's
    consumer, judging later, still 0.3-0.47 (2 µs a record: a Message object each); the raw
    fetch below 0.05 (0.12 µs a record)."""

    def __init__(self, topic: str, work: Workload, started: float) -> None:
        self.oracle = Oracle(work)
        self.count = 0  # outputs read (judged or not)
        self.complete_at: float | None = None
        self.seen_at: dict[int, float] = {}  # input index → first time its answer was read
        self.series = Series(started)
        self._unjudged: list[tuple[float, Any, int]] = []  # (read at, batch, from offset)
        self._topic = topic

    async def run(self) -> None:
        """Read with streamkit's raw read_committed fetch (`aiokafka_internals`: the record
        batches' headers parsed in C, no object per record until `judge`), one Fetch at a time
        per leader, which the broker answers as soon as anything new is committed."""
        client = RawClient({"bootstrap_servers": bootstrap()}, "bench-observer")
        sessions: dict[int, FetchSession] = {}
        positions = {TopicPartition(self._topic, p): 0 for p in range(PARTITIONS)}
        try:
            while True:
                for node, tps in (await client.leaders(list(positions))).items():
                    asked = {tp: positions[tp] for tp in tps}
                    session = sessions.setdefault(node, FetchSession())
                    found = await client.fetch_input(
                        node,
                        session,
                        asked,
                        MAX_WAIT_MS,
                        MIN_BYTES,
                        PARTITION_BYTES,
                        RESPONSE_BYTES,
                    )
                    now = time.monotonic()
                    for tp, got in (found or {}).items():
                        if got.out_of_range:
                            raise RuntimeError(f"observer: {tp} out of range at {got.start}")
                        for batch in got.batches:
                            start = max(batch.base_offset, got.start)
                            self._unjudged.append((now, batch, got.start))
                            self.count += batch.next_offset - start
                        positions[tp] = max(positions[tp], got.next_offset)
                    self.series.note(now, self.count)
                    if found is None:
                        await asyncio.sleep(0.05)  # the metadata is being refreshed
        finally:
            await client.close()

    def judge(self) -> None:
        """Put the outputs read since the last call through the oracle, in the order read."""
        oracle, seen_at, unjudged = self.oracle, self.seen_at, self._unjudged
        self._unjudged = []  # what `run` reads from now on waits for the next call
        for now, batch, start in unjudged:
            for record in input_records("", 0, [batch], start, 1 << 62):
                i = oracle.observe(orjson.loads(record.value or b"null"))
                if i is not None and i not in seen_at:
                    seen_at[i] = now
            if self.complete_at is None and oracle.complete():
                self.complete_at = now


def listening_pids(bootstrap: str) -> list[int]:
    """The local processes listening on the bootstrap servers' ports (the broker's JVM when it
    runs on this machine; [] for a remote one): found through /proc/net/tcp and each
    process's socket links."""
    ports = {int(server.rsplit(":", 1)[1]) for server in bootstrap.split(",") if ":" in server}
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) in ports:
                    inodes.add(f"socket:[{fields[9]}]")  # 0A: LISTEN
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                pids.append(int(proc.name))
    return pids


def proc_usage(pids: list[int]) -> tuple[float, float]:
    """CPU seconds (user + system) and peak RSS (MB, VmHWM) summed over running processes."""
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = rss = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu += (int(fields[11]) + int(fields[12])) / ticks
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                rss += int(line.split()[1]) / 1024
    return cpu, rss
