"""`make demo`: worker processes of an exactly-once purchases app on a real local Kafka broker.

The driver starts two `streamkit worker apps.demo:app` processes that share the 4 input
partitions, sends purchases (some malformed, some that make the agent raise), kills one worker
with SIGKILL halfway and starts a replacement, reads the results back under read_committed,
prints what happened, and checks it against what it sent: one receipt per good purchase, no
duplicate despite the crash. Exit code 0 only when every check passes.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

import streamkit as sk
from streamkit.runtime.admin import ensure_app_topics
from streamkit.runtime.dlq import describe


class Purchase(BaseModel):
    user_id: str
    amount: float
    ts: float


RUN = os.environ.get("DEMO_RUN", "local")
app = sk.App(f"demo-{RUN}", commit_interval=0.5, processing_guarantee="exactly_once")
purchases = app.topic(f"demo-{RUN}-purchases", value_type=Purchase, partitions=4)
receipts = app.topic(f"demo-{RUN}-receipts", partitions=4)


@app.agent(purchases, sink=receipts)
async def issue_receipts(stream: sk.Stream[Purchase]) -> AsyncIterator[dict[str, Any]]:
    """Validate each purchase, turn it into a receipt in cents, flag the big ones."""
    async for p in stream:
        if p.amount <= 0:
            raise ValueError(f"amount must be positive, got {p.amount}")
        event = stream.event
        yield {
            "user_id": p.user_id,
            "cents": round(p.amount * 100),
            "big": p.amount >= 200,
            "partition": event.partition,
            "offset": event.offset,
            "worker": os.getpid(),
        }


# -- the driver --------------------------------------------------------------------------------

N_GOOD, N_MALFORMED, N_NEGATIVE = 3000, 7, 5
console = Console()


def make_input(seed: int = 7) -> tuple[list[tuple[bytes, bytes]], dict[str, int]]:
    rng = random.Random(seed)
    users = [f"user_{i}" for i in range(1, 200)]
    records: list[tuple[bytes, bytes]] = []
    truth: dict[str, int] = collections.Counter()
    for i in range(N_GOOD):
        user = "user_123" if i % 10 == 0 else rng.choice(users)
        amount = round(rng.uniform(1, 300), 2)
        truth[user] += round(amount * 100)
        value = {"user_id": user, "amount": amount, "ts": time.time()}
        records.append((user.encode(), orjson.dumps(value)))
    for i in range(N_MALFORMED):
        records.append((b"bad", b"{not json" if i % 2 else b'{"user_id": 5}'))
    for _ in range(N_NEGATIVE):
        records.append((b"user_1", orjson.dumps({"user_id": "user_1", "amount": -1, "ts": 0})))
    rng.shuffle(records)
    return records, dict(truth)


def start_worker(name: str, logs: Path) -> subprocess.Popen[bytes]:
    log = (logs / f"{name}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "streamkit.cli", "worker", "apps.demo:app"],
        env={**os.environ, "DEMO_RUN": RUN, "STREAMKIT_WORKDIR": str(logs / name)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


async def both_assigned(logs: Path, names: list[str], within: float) -> None:
    """Wait until each worker's log shows an assignment after its last revoke."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        texts = [(logs / f"{n}.log").read_text(errors="replace") for n in names]
        if all("assigned" in t.rsplit("revoked", 1)[-1] for t in texts):
            return
        await asyncio.sleep(0.1)
    raise SystemExit(f"workers did not join within {within}s; see the logs in {logs}")


async def read_topic(topic: str, expect: int, within: float) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=app.settings.bootstrap_servers,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
    )
    await consumer.start()
    records: list[Any] = []
    deadline = time.monotonic() + within
    try:
        while len(records) < expect and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
        if len(records) >= expect:  # a little longer: any duplicate would show now
            for batch in (await consumer.getmany(timeout_ms=1500)).values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


async def drive(logs: Path) -> bool:
    console.rule("[bold]streamkit demo")
    console.print(f"Kafka broker: [cyan]{app.settings.bootstrap_servers}[/]  app id: {app.id}")
    records, truth = make_input()
    await ensure_app_topics(app, client_id=f"{app.id}-demo")
    workers = [start_worker("worker-1", logs), start_worker("worker-2", logs)]
    started = time.monotonic()
    half = len(records) // 2
    try:
        await both_assigned(logs, ["worker-1", "worker-2"], within=60)
        console.print(f"Two workers joined group {app.id} in {time.monotonic() - started:.1f}s.")
        started = time.monotonic()
        async with app.producer() as producer:
            for key, value in records[:half]:
                await producer.send_raw(purchases.name, value, key=key)
            await read_topic(receipts.name, N_GOOD // 4, within=60)
            workers[1].kill()  # SIGKILL in the middle of the stream
            workers[1].wait(10)
            workers.append(start_worker("worker-3", logs))
            console.print(
                "Killed worker-2 with SIGKILL mid-stream (its open transactions are aborted); "
                "started worker-3."
            )
            for key, value in records[half:]:
                await producer.send_raw(purchases.name, value, key=key)
        console.print(
            f"Sent {len(records)} purchases: {N_GOOD} good, {N_MALFORMED} malformed, "
            f"{N_NEGATIVE} with a negative amount."
        )
        out = await read_topic(receipts.name, N_GOOD, within=90)
        dead = await read_topic(app.dlq.name, N_MALFORMED + N_NEGATIVE, within=30)
        elapsed = time.monotonic() - started
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        codes = [w.wait(60) for w in workers]
    return report(out, dead, truth, codes, elapsed)


def report(
    out: list[Any], dead: list[Any], truth: dict[str, int], codes: list[int], elapsed: float
) -> bool:
    receipts_ = [orjson.loads(r.value) for r in out]
    per_worker: dict[int, set[int]] = collections.defaultdict(set)
    count: collections.Counter[int] = collections.Counter()
    totals: collections.Counter[str] = collections.Counter()
    for r in receipts_:
        per_worker[r["worker"]].add(r["partition"])
        count[r["worker"]] += 1
        totals[r["user_id"]] += r["cents"]

    table = Table(title="Work split between the worker processes")
    for col in ("worker pid", "partitions", "purchases"):
        table.add_column(col)
    for pid, parts in sorted(per_worker.items()):
        table.add_row(str(pid), ", ".join(map(str, sorted(parts))), str(count[pid]))
    console.print(table)

    top = Table(title="Top spenders (from the receipts topic)")
    top.add_column("user")
    top.add_column("total", justify="right")
    for user, cents in totals.most_common(5):
        top.add_row(user, f"{cents / 100:,.2f}")
    console.print(top)

    reasons = collections.Counter(describe(d.headers)["streamkit.error.type"] for d in dead)
    console.print(f"Dead letters: {len(dead)} " + str(dict(reasons)))
    console.print(f"{len(receipts_)} receipts in {elapsed:.1f}s after the first purchase was sent")

    checks = {
        "every good purchase has exactly one receipt": len(receipts_) == N_GOOD,
        "user_123's total matches what was sent": totals["user_123"] == truth["user_123"],
        "every user's total matches": dict(totals) == truth,
        "no receipt was written twice despite the kill -9": len(
            {(r["partition"], r["offset"]) for r in receipts_}
        )
        == len(receipts_),
        "the work was shared between processes": len(per_worker) >= 2,
        "every bad record is in the DLQ with its reason": reasons
        == {"DecodeError": N_MALFORMED, "ValueError": N_NEGATIVE},
        "the survivors stopped cleanly on SIGTERM": codes == [0, -signal.SIGKILL, 0],
    }
    console.print(
        f"user_123 spent {totals['user_123'] / 100:,.2f} (sent: {truth['user_123'] / 100:,.2f})"
    )
    for name, ok in checks.items():
        console.print(("[green]PASS[/] " if ok else "[red]FAIL[/] ") + name)
    return all(checks.values())


def main() -> None:
    global RUN
    if RUN == "local":  # a fresh set of topics per demo run
        os.environ["DEMO_RUN"] = RUN = uuid.uuid4().hex[:6]
        os.execv(sys.executable, [sys.executable, "-m", "apps.demo"])
    logs = Path(os.environ.get("DEMO_LOGS", f"/tmp/streamkit-demo-{RUN}"))
    logs.mkdir(parents=True, exist_ok=True)
    ok = asyncio.run(drive(logs))
    console.print(f"Worker logs: {logs}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
