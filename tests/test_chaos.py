"""The chaos suite: `apps.shop` (exactly-once, three worker processes) through a broker restart,
a rebalance storm, a state disk that fills up and then turns read-only, and a corrupted SQLite
store. After each: every purchase counted once in the read_committed output (0 lost, 0
duplicated) and the stores equal to the oracle; each prints its figures (see
docs/reliability.md). `make test` runs the short forms; `make chaos` sets CHAOS_LONG=1.
(The kill -9 run and the zombie are in tests/test_exactly_once.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.chaoshelp import Fleet, OutputWatch, Tmpfs, figures, merged_workdir, summary
from tests.kafkahelp import ROOT, WorkerProcess, wait_until
from tests.shophelp import assert_exactly_once, assert_state, holding, purchases, send, shop_app

LONG = os.environ.get("CHAOS_LONG") == "1"
SIGKILL_BROKER = os.environ.get("CHAOS_BROKER_SIGKILL") == "1"  # every broker restart a kill -9


async def feed(uid: str, rows: list[dict[str, Any]], chunk: int, pause: float) -> None:
    for at in range(0, len(rows), chunk):
        await send(uid, rows[at : at + chunk])
        await asyncio.sleep(pause)


def no_failures(fleet: Fleet, *allowed: WorkerProcess) -> None:
    for w in fleet.incarnations:
        if w not in allowed:
            assert "worker failing" not in w.log(), w.log()


async def check(uid: str, fleet: Fleet, watch: OutputWatch, rows: list[Any], tmp: Path) -> int:
    """Stop the fleet, then: exactly-once output under read_committed, state == oracle."""
    records = await watch.wait_for(len(rows), within=240 if LONG else 120)
    await watch.stop()
    await asyncio.to_thread(fleet.stop_all)
    assert_exactly_once(records, rows)
    assert_state(shop_app(uid, merged_workdir(fleet.workdirs, tmp / "merged")), rows)
    return len(records)


async def test_a_broker_restart_mid_run_loses_nothing(
    uid: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test's own broker (not the session's) is stopped (SIGTERM; in the long form every
    other restart is a SIGKILL) and started again on the same data dir and ports while three
    workers have transactions open; they ride it out."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import localkafka

    broker = await asyncio.to_thread(localkafka.start_broker)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", broker.bootstrap)
    restarts = 3 if LONG else 1
    rows = purchases(12000 if LONG else 4000, seed=21)
    fleet = Fleet(uid, tmp_path)
    try:
        for i in range(3):
            fleet.start(i)
        await holding(*fleet.running())
        watch = await OutputWatch(f"totals-{uid}").start()
        per = len(rows) // (restarts + 1)
        downtimes, ups = [], []
        for r in range(restarts + 1):
            end = len(rows) if r == restarts else (r + 1) * per
            await feed(uid, rows[r * per : end], chunk=100, pause=0.1)
            if r == restarts:
                break
            began = time.monotonic()  # the last chunks are in flight: transactions are open
            kill = SIGKILL_BROKER or (LONG and r % 2 == 1)  # long form: SIGTERM, SIGKILL, ...
            await asyncio.to_thread(broker.restart, kill=kill)
            ups.append(time.monotonic())
            downtimes.append(round(ups[-1] - began, 2))
        events = await check(uid, fleet, watch, rows, tmp_path)
        no_failures(fleet)
    finally:
        await asyncio.to_thread(fleet.stop_all)
        await asyncio.to_thread(broker.stop)
    recoveries = [watch.resumed_after(t) for t in ups]
    assert all(r is not None for r in recoveries)
    figures(
        "broker restart",
        restarts=restarts,
        events_checked=events,
        broker_down_s=downtimes,
        **summary([r for r in recoveries if r is not None]),
    )


async def test_a_rebalance_storm_loses_nothing(uid: str, tmp_path: Path) -> None:
    """Workers join and leave (SIGTERM) every few seconds while purchases flow: 1 to 4 of them,
    each on its own workdir, so partitions and their stores keep moving."""
    seed = int(os.environ.get("CHAOS_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    steps = 40 if LONG else 8
    rows = purchases(20000 if LONG else 5000, seed=seed)
    fleet = Fleet(uid, tmp_path, [tmp_path / f"wd{i}" for i in range(4)])
    joins = leaves = 0
    changes: list[float] = []
    try:
        fleet.start(0)
        fleet.start(1)
        await holding(*fleet.running())
        watch = await OutputWatch(f"totals-{uid}").start()
        chunk = max(1, len(rows) // (steps * 12))
        feeder = asyncio.create_task(feed(uid, rows, chunk=chunk, pause=0.25))
        for _ in range(steps):
            await asyncio.sleep(rng.uniform(2.0, 4.0))
            up = [i for i, w in fleet.current.items() if w.alive]
            down = [i for i in range(4) if i not in up]
            if down and (len(up) < 2 or rng.random() < 0.5):
                fleet.start(rng.choice(down))
                joins += 1
            else:
                await asyncio.to_thread(fleet.current[rng.choice(up)].stop)
                leaves += 1
            changes.append(time.monotonic())
        await feeder
        if not fleet.running():
            fleet.start(0)
        events = await check(uid, fleet, watch, rows, tmp_path)
        no_failures(fleet)
    finally:
        await asyncio.to_thread(fleet.stop_all)
    # the last changes may come after the last input: only those followed by output count
    recoveries = [r for r in map(watch.resumed_after, changes) if r is not None]
    figures(
        "rebalance storm",
        seed=seed,
        joins=joins,
        leaves=leaves,
        events_checked=events,
        **summary(recoveries),
    )


def disk_error(log: str, *words: str) -> bool:
    tail = log.rsplit("worker failing", 1)[-1] if "worker failing" in log else ""
    return any(w in tail for w in words)


async def test_a_full_then_read_only_state_disk_fails_loudly_and_recovers(
    uid: str, tmp_path: Path
) -> None:
    """Worker 0 keeps its state on a small tmpfs. Filled up mid-run, the worker's next state
    write fails (ENOSPC): it stops with an error, commits nothing more, and its partitions move;
    freed, a restart on the same workdir resumes. Remounted read-only, a start fails the same
    way (EROFS); read-write again, it recovers."""
    why = Tmpfs.available()
    if why is not None:
        pytest.skip(why)
    disk = Tmpfs(tmp_path / "disk", size_mb=16).mount()
    rows = purchases(9000 if LONG else 4500, seed=23)
    third = len(rows) // 3
    fleet = Fleet(uid, tmp_path, [disk.path / "wd0", tmp_path / "wd1", tmp_path / "wd2"])
    try:
        for i in range(3):
            fleet.start(i)
        await holding(*fleet.running())
        watch = await OutputWatch(f"totals-{uid}").start()
        await feed(uid, rows[:third], chunk=100, pause=0.1)
        # full: the running worker's next store write needs room
        victim = fleet.current[0]
        disk.fill()
        filled = time.monotonic()
        feeder = asyncio.create_task(feed(uid, rows[third : 2 * third], chunk=50, pause=0.2))
        await wait_until(lambda: not victim.alive, within=90, what="w0 to fail on the full disk")
        failed_after = time.monotonic() - filled
        await feeder
        assert victim.wait(5) != 0
        assert disk_error(victim.log(), "disk is full", "No space left on device"), victim.log()
        assert "final checkpoint skipped" in victim.log(), victim.log()  # commits nothing more
        await watch.wait_for(2 * third, within=120)  # the others took its partitions over
        disk.free()
        freed = time.monotonic()
        await holding(fleet.start(0))
        full_recovery = time.monotonic() - freed
        no_failures(fleet, victim)
        # read-only: a worker started on it fails at once, committing nothing (w2 leaves
        # too, so that w0 must take partitions: 4 per topic over 3 members may leave it none)
        await asyncio.to_thread(fleet.current[0].stop)
        await asyncio.to_thread(fleet.current[2].stop)
        disk.read_only(True)
        ro = fleet.start(0)
        await wait_until(lambda: not ro.alive, within=90, what="w0 to fail on the read-only disk")
        assert ro.wait(5) != 0
        # the settings check sees the read-only workdir first ("bad setting workdir ... is not
        # writable"); a disk that turns read-only later fails in the store ("is read-only")
        log = ro.log()
        assert ("bad setting workdir" in log and "is not writable" in log) or disk_error(
            log, "is read-only", "Read-only file system"
        ), log
        disk.read_only(False)
        back = time.monotonic()
        await holding(fleet.start(0))
        ro_recovery = time.monotonic() - back
        await feed(uid, rows[2 * third :], chunk=100, pause=0.1)
        events = await check(uid, fleet, watch, rows, tmp_path)
        no_failures(fleet, victim, ro)
    finally:
        await asyncio.to_thread(fleet.stop_all)
        disk.unmount()
    figures(
        "state disk full / read-only",
        events_checked=events,
        full_failed_after_s=round(failed_after, 2),
        full_recovered_in_s=round(full_recovery, 2),
        read_only_recovered_in_s=round(ro_recovery, 2),
    )


async def test_a_corrupted_store_is_rebuilt_from_the_changelog_mid_run(
    uid: str, tmp_path: Path
) -> None:
    """kill -9 a worker, overwrite its SQLite files with garbage, start it again: each corrupt
    store is set aside and rebuilt from the changelog, and nothing is lost or counted twice."""
    rows = purchases(6000 if LONG else 3000, seed=24)
    half = len(rows) // 2
    fleet = Fleet(uid, tmp_path)
    try:
        for i in range(3):
            fleet.start(i)
        await holding(*fleet.running())
        watch = await OutputWatch(f"totals-{uid}").start()
        await feed(uid, rows[:half], chunk=100, pause=0.1)
        await watch.wait_for(half, within=90)
        fleet.current[1].kill9()
        stores = sorted(fleet.workdirs[1].rglob("*.sqlite"))
        assert stores, "worker 1 had no store to corrupt"
        for path in stores:
            with contextlib.closing(sqlite3.connect(path)) as db:  # the WAL's pages into the file
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            data = bytearray(path.read_bytes())
            assert len(data) > 8192, f"{path}: nothing to corrupt"
            data[1024:] = os.urandom(len(data) - 1024)  # garbage over every b-tree page
            path.write_bytes(bytes(data))
            for side in ("-wal", "-shm"):  # no intact copy of the pages left anywhere
                path.with_name(path.name + side).unlink(missing_ok=True)
        restarted = time.monotonic()
        fleet.start(1)
        await feed(uid, rows[half:], chunk=100, pause=0.1)
        await watch.wait_for(len(rows), within=120)
        # worker 1 alone: it opens every store, the corrupt ones among them
        for i in (0, 2):
            await asyncio.to_thread(fleet.current[i].stop)
        await wait_until(
            lambda: all(list(p.parent.glob(p.name + ".bad-*")) for p in stores),
            within=120,
            what="every corrupt store set aside",
        )
        rebuilt_in = time.monotonic() - restarted
        events = await check(uid, fleet, watch, rows, tmp_path)
        no_failures(fleet)
    finally:
        await asyncio.to_thread(fleet.stop_all)
    assert "set aside" in fleet.current[1].log()
    figures(
        "corrupted store",
        corrupted_files=len(stores),
        events_checked=events,
        set_aside_within_s=round(rebuilt_in, 2),
    )


ECOM_KILLS = int(os.environ.get("CHAOS_ECOM_KILLS", "20"))


@pytest.mark.skipif(
    not LONG, reason="make chaos: the demo under kill -9 (tests/test_ecommerce_demo.py runs it)"
)
def test_the_ecommerce_demo_passes_its_oracle_checks_under_kill_9(tmp_path: Path) -> None:
    """The flagship pipeline (clicks, purchases, a table from a topic, sessions, top-k) with three
    workers, ECOM_KILLS kill -9s of a random one while events flow (each replaced by a new
    worker): every check of the demo against its generator's oracle passes (spend per user,
    sessions, trending, DLQ, late events, enriched once each, the local sink, clean stops)."""
    env = {**os.environ, "ECOM_LOGS": str(tmp_path), "COLUMNS": "1000"}
    args = ["--workers", "3", "--kills", str(ECOM_KILLS), "--seconds", "90"]
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "apps.ecommerce", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=900,
    )
    out = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    assert done.returncode == 0, out
    assert "FAIL" not in out, out
    assert "All checks passed." in out
    assert out.count("PASS ") == 12, out
    killed = re.search(r"\(([^()]*) killed with SIGKILL midway\)", out)
    assert killed is not None, out
    assert len(killed.group(1).split(", ")) == ECOM_KILLS, out
    sent = re.search(r"([\d,]+) records sent", out)
    figures(
        "e-commerce demo under kill -9",
        kills_survived=ECOM_KILLS,
        records_sent=sent.group(1) if sent else "?",
        checks_passed=out.count("PASS "),
        run_s=round(time.monotonic() - began, 1),
    )
