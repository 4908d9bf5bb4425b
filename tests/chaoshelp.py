"""Helpers of the chaos suite (tests/test_chaos.py): a read_committed watcher of the output that
times recoveries, a fleet of `apps.shop` workers on their own workdirs, a small tmpfs to play
the part of a state disk that fills up or turns read-only, and the figures each scenario prints
(and appends to $CHAOS_FIGURES when set, for docs/reliability.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

from tests.kafkahelp import WorkerProcess, bootstrap, wait_until
from tests.shophelp import shop_worker


class OutputWatch:
    """Reads a topic under read_committed from the start, in the background, keeping every
    record and the time each partition last received one: the figures of recovery come from
    here (after a fault at t, output has resumed once every partition got a record after t)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.records: list[Any] = []
        self.times: list[float] = []  # when each record arrived (same order as records)
        self.arrivals: dict[int, list[float]] = {}
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> OutputWatch:
        self._consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=bootstrap(),
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            enable_auto_commit=False,
            group_id=None,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            now = time.monotonic()
            for tp, recs in batch.items():
                self.records.extend(recs)
                self.times.extend([now] * len(recs))
                self.arrivals.setdefault(tp.partition, []).append(now)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    def resumed_after(self, t: float) -> float | None:
        """Seconds from `t` until every output partition seen so far received a record after
        `t` (None while one has not)."""
        firsts = []
        for times in self.arrivals.values():
            later = [a for a in times if a > t]
            if not later:
                return None
            firsts.append(later[0])
        return max(firsts) - t if firsts else None

    async def wait_for(self, expect: int, within: float) -> list[Any]:
        """Every record once `expect` are there, after a quiet second (a duplicate shows)."""
        await wait_until(
            lambda: len(self.records) >= expect,
            within=within,
            what=f"{expect} records on {self.topic} (have {len(self.records)})",
            every=0.2,
        )
        await asyncio.sleep(1.5)
        return list(self.records)


class Fleet:
    """`apps.shop` workers, each on its own workdir; every incarnation is kept (logs, stop)."""

    def __init__(self, uid: str, root: Path, workdirs: list[Path] | None = None) -> None:
        self.uid = uid
        self.root = root
        self.workdirs = workdirs or [root / f"wd{i}" for i in range(3)]
        self.current: dict[int, WorkerProcess] = {}
        self.incarnations: list[WorkerProcess] = []

    def start(self, i: int, env: dict[str, str] | None = None) -> WorkerProcess:
        name = f"w{i}-{len(self.incarnations)}"
        w = shop_worker(self.uid, self.workdirs[i], self.root, name)
        w.env.update(env or {})
        self.current[i] = w.start()
        self.incarnations.append(w)
        return w

    def running(self) -> list[WorkerProcess]:
        return [w for w in self.current.values() if w.alive]

    def stop_all(self) -> None:
        for w in self.incarnations:
            if w.alive:
                w.signal(signal.SIGCONT)  # a frozen one first thaws, then stops
            w.stop()


def figures(scenario: str, **values: Any) -> None:
    """Print a scenario's figures; append them as a JSON line to $CHAOS_FIGURES if set."""
    line = {"scenario": scenario, **values}
    print(f"\nchaos figures: {json.dumps(line)}")
    out = os.environ.get("CHAOS_FIGURES")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(line) + "\n")


def summary(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {}
    return {
        "recovery_median_s": round(statistics.median(seconds), 2),
        "recovery_max_s": round(max(seconds), 2),
    }


class Tmpfs:
    """A small tmpfs mounted at `path`: a real, kernel-enforced disk that can fill up (ENOSPC)
    and be remounted read-only (EROFS). Needs root and a permitted `mount`."""

    def __init__(self, path: Path, size_mb: int) -> None:
        self.path = path
        self.size_mb = size_mb
        self.filler = path / "filler"

    @staticmethod
    def available() -> str | None:
        """None if a tmpfs can be mounted here, else why not."""
        if os.geteuid() != 0:
            return "needs root to mount a tmpfs"
        probe = Path(f"/tmp/streamkit-mount-probe-{os.getpid()}")
        probe.mkdir(exist_ok=True)
        try:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                return f"mount not permitted: {done.stderr.strip()}"
            subprocess.run(["umount", str(probe)], check=True)
            return None
        finally:
            with contextlib.suppress(OSError):
                probe.rmdir()

    def mount(self) -> Tmpfs:
        self.path.mkdir(parents=True, exist_ok=True)
        opts = f"size={self.size_mb}m"
        subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(self.path)], check=True)
        return self

    def fill(self) -> int:
        """Write zeros until the disk is full; the bytes written."""
        n = 0
        chunk = b"\0" * 65536
        with open(self.filler, "wb", buffering=0) as f:
            try:
                while True:
                    n += f.write(chunk)
            except OSError:
                pass
            with contextlib.suppress(OSError):  # the last few bytes too
                while f.write(b"\0" * 512):
                    n += 512
        return n

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def read_only(self, ro: bool) -> None:
        mode = "ro" if ro else "rw"
        subprocess.run(["mount", "-o", f"remount,{mode}", str(self.path)], check=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


def merged_workdir(workdirs: list[Path], dest: Path) -> Path:
    """A workdir holding, for every store file found in `workdirs`, the freshest copy (the one
    whose recorded offsets are furthest on): after every worker stopped, that is the last
    owner's store, the one the state check must read."""
    best: dict[Path, tuple[int, Path]] = {}
    for wd in workdirs:
        for path in wd.rglob("*.sqlite"):
            with contextlib.closing(sqlite3.connect(path)) as db:
                (score,) = db.execute("SELECT coalesce(sum(offset), 0) FROM offsets").fetchone()
            rel = path.relative_to(wd)
            if rel not in best or score > best[rel][0]:
                best[rel] = (int(score), path)
    for rel, (_score, path) in best.items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        for suffix in ("", "-wal"):
            side = path.with_name(path.name + suffix)
            if side.exists():
                shutil.copyfile(side, target.with_name(target.name + suffix))
    return dest
