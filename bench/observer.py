"""The side-by-side harness's observer: reads a run's committed output into the oracle and keeps
the time series of the output count, from which start-up and the steady rate are taken.

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

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer

from bench.common import bootstrap
from bench.pipelines import Oracle, Workload

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
    """Reads the output (read_committed) from the start into the oracle; keeps the count's
    time series; notes when each input event's answer was read (the paced runs' latency)."""

    def __init__(self, topic: str, work: Workload, started: float) -> None:
        self.oracle = Oracle(work)
        self.complete_at: float | None = None
        self.seen_at: dict[int, float] = {}  # input index → first time its answer was read
        self.series = Series(started)
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap(),
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            group_id=None,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )

    async def run(self) -> None:
        await self._consumer.start()
        oracle, seen_at, series = self.oracle, self.seen_at, self.series
        try:
            while True:
                batch = await self._consumer.getmany(timeout_ms=50)
                now = time.monotonic()
                for records in batch.values():
                    for rec in records:
                        i = oracle.observe(orjson.loads(rec.value))
                        if i is not None and i not in seen_at:
                            seen_at[i] = now
                if self.complete_at is None and oracle.complete():
                    self.complete_at = now
                series.note(now, oracle.count)
        finally:
            await self._consumer.stop()


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
