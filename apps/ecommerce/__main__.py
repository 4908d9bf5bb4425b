"""`make demo`: the e-commerce pipeline on a real broker, two worker processes, a live view.

    python -m apps.ecommerce [--short] [--seconds N] [--no-kill] [--workers N] [--kills N]

Creates a fresh set of topics, writes the product catalog, starts two `streamkit worker
apps.ecommerce.pipeline:app` processes (exactly-once), sends the generated clicks and
purchases over about `--seconds`, kills one worker with SIGKILL midway and starts a
replacement, shows a live view read from Kafka (events/s per stage and partition, lag, top
spenders, trending products, sessions closed, late and DLQ counts, the hot partition), then
stops everything and prints a summary with the checks against the generator's oracle. Exit
code 0 only if every check passes. `--short` (or ECOM_SHORT=1): fewer events, for `make test`.
`--workers 3 --kills 20` (the chaos suite): 20 kill -9s of a random worker, spread over the
sending, each followed by a replacement on a fresh workdir.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.live import Live

from apps.ecommerce.generator import Config, Input, Truth, generate, oracle
from apps.ecommerce.monitor import Outputs, Progress, window_watermarks
from apps.ecommerce.view import (
    Status,
    checks,
    hot_partition,
    progress_line,
    render,
    side_tables,
    stages_table,
    summary,
)
from streamkit.keys import partition_for_key

console = Console()
SPEC = "apps.ecommerce.pipeline:app"


def worker(name: str, logs: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = (logs / f"{name}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "streamkit.cli", "worker", SPEC],
        env={**os.environ, **env, "STREAMKIT_WORKDIR": str(logs / name)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


async def joined(logs: Path, names: list[str], within: float) -> None:
    """Wait until each worker's log shows an assignment after its last revoke."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        texts = [(logs / f"{n}.log").read_text(errors="replace") for n in names]
        if all("assigned" in t.rsplit("revoked", 1)[-1] for t in texts):
            return
        await asyncio.sleep(0.2)
    raise SystemExit(f"workers did not join within {within}s; see the logs in {logs}")


class Demo:
    def __init__(
        self, cfg: Config, seconds: float, kills: int, logs: Path, n_workers: int = 2
    ) -> None:
        self.cfg = cfg
        self.seconds = seconds
        self.kills = kills
        self.n_workers = n_workers
        self.rng = random.Random(int(os.environ.get("CHAOS_SEED", "0")))
        self.logs = logs
        self.env = {
            "ECOM_RUN": os.environ["ECOM_RUN"],
            "ECOM_GAP": str(cfg.gap_s),
            "ECOM_WINDOW": str(cfg.window_s),
            "ECOM_HOP": str(cfg.hop_s),
            "ECOM_TOP": str(cfg.top),
            "ECOM_FRAUD": str(cfg.fraud),
            "ECOM_SINK_DIR": str(logs / "sink"),
            "STREAMKIT_SESSION_TIMEOUT_MS": "6000",  # a killed worker's partitions move sooner
        }
        self.pipeline: Any = importlib.import_module("apps.ecommerce.pipeline")
        self.app = self.pipeline.app
        self.status = Status(0.0, 0, 0, "starting")
        self.started = time.monotonic()
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.killed: list[str] = []
        self.out: Outputs | None = None

    def topics(self) -> dict[str, str]:
        p, app = self.pipeline, self.app
        _ = app.stages  # builds the graph: names the late topics
        return {
            "enriched": p.enriched.name,
            "sessions": p.sessions_out.name,
            "trending": p.trending_out.name,
            "totals": p.totals.name,
            "fraud-alerts": p.fraud_alerts.name,
            "conversions": p.conversions.name,
            "dlq": app.dlq.name,
            "late-sessions": str(p.user_sessions.late_topic),
            "late-trending": str(p.trending.late_topic),
        }

    async def run(self, data: Input, truth: Truth) -> tuple[Outputs, Progress, list[int | None]]:
        from streamkit.runtime.admin import ensure_app_topics

        app, p = self.app, self.pipeline
        bootstrap = app.settings.bootstrap_servers
        console.print(f"Kafka broker [cyan]{bootstrap}[/], app [cyan]{app.id}[/], logs {self.logs}")
        await ensure_app_topics(app, client_id=f"{app.id}-demo")
        async with app.producer() as producer:
            for key, value in data.catalog:
                await producer.send_raw(p.catalog.name, value, key=key)
        names = [f"worker-{i + 1}" for i in range(self.n_workers)]
        self.workers = {n: worker(n, self.logs, self.env) for n in names}
        await joined(self.logs, list(self.workers), within=90)
        console.print(f"{self.n_workers} workers joined in {time.monotonic() - self.started:.1f}s")
        self.out = out = Outputs(bootstrap, self.topics(), self.logs / "sink", self.cfg.top)
        progress = Progress(bootstrap, app.id, app.stages)
        await out.start()
        await progress.start()
        live = Live(render(progress, out, self.status), console=console, auto_refresh=False)
        interactive = console.is_terminal
        try:
            if interactive:
                live.start()
            watcher = asyncio.create_task(self.watch(out, progress, live, interactive))
            await self.send(data, truth.clicks_valid - len(data.flush))
            self.status.phase = "draining"
            await self.drained(out, progress, truth, within=120 if self.cfg.clicks > 2000 else 90)
            self.status.phase = "done"
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await progress.sample()
            if interactive:
                live.update(render(progress, out, self.status), refresh=True)
        finally:
            if interactive:
                live.stop()
            codes = self.stop_workers()
            await progress.stop()
            await out.stop()
        dsn = os.environ.get("STREAMKIT_POSTGRES_DSN")
        if dsn:
            await out.read_postgres(dsn, p.PG_TABLE)
        return out, progress, codes

    async def watch(self, out: Outputs, progress: Progress, live: Live, interactive: bool) -> None:
        last_sample = last_line = 0.0
        while True:
            await out.poll(200)
            now = time.monotonic()
            self.status.elapsed = now - self.started
            if now - last_sample >= 1.0:
                last_sample = now
                await progress.sample()
                if interactive:
                    live.update(render(progress, out, self.status), refresh=True)
            if not interactive and now - last_line >= 5.0:
                last_line = now
                console.print(progress_line(progress, out, self.status))

    async def wait_for(self, condition: Callable[[], bool], within: float) -> bool:
        deadline = time.monotonic() + within
        while not condition():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.2)
        return True

    def windows_past(self, ts: float) -> bool:
        """Whether every partition of the windows a late click reaches (sessions, trending)
        committed a watermark past all the windows of a click at `ts`: only then is it late
        for them whatever happens next (a click that reaches a task before any watermark
        passed its windows is on time there). Under load, with kill -9s early in the run,
        the pipeline may not have moved a watermark yet when the generator reaches a late
        click: sent then, it would count in a window a day old."""
        names = [self.pipeline.trending.name, self.pipeline.user_sessions.name]
        workdirs = [self.logs / name for name in self.workers]
        lateness = max(self.app.windows[name].allowed_lateness_ms for name in names)
        past = ts + max(self.cfg.window_s, self.cfg.gap_s) * 1000 + lateness
        return bool(min(window_watermarks(self.app, names, workdirs)) > past)

    async def send(self, data: Input, expect: int) -> None:
        p = self.pipeline
        purchase_of = {cid: (key, value) for cid, key, value in data.purchases}
        sends: list[tuple[str, bytes | None, bytes]] = []
        for key, value in data.clicks:
            sends.append((p.clicks.name, key, value))
            try:
                click = orjson.loads(value)
                cid = click.get("id") if isinstance(click, dict) else None
            except orjson.JSONDecodeError:
                cid = None
            if cid in purchase_of:
                pkey, pvalue = purchase_of[cid]
                sends.append((p.purchases.name, pkey, pvalue))
        self.status.to_send = len(sends) + len(data.flush)
        late = {}  # a late click's record → its event time (ms)
        for _, value in data.clicks:
            with contextlib.suppress(orjson.JSONDecodeError):
                click = orjson.loads(value)
                if isinstance(click, dict) and click.get("id") in data.late_ids:
                    late[value] = float(click["ts"]) * 1000
        self.status.phase = "sending"
        per_tick = max(1, round(len(sends) / (self.seconds * 10)))
        # one kill at 40 % (the demo), or `kills` spread over 20 % .. 80 % of the sending
        spread = [0.2 + 0.6 * k / max(1, self.kills - 1) for k in range(self.kills)]
        kill_at = [int(len(sends) * f) for f in ([0.4] if self.kills == 1 else spread)]
        held: list[tuple[str, bytes | None, bytes]] = []  # late clicks not sent yet
        began = time.monotonic()
        async with self.app.producer() as producer:
            for tick, i in enumerate(range(0, len(sends), per_tick)):
                for topic, key, value in sends[i : i + per_tick]:
                    if value in late:  # held until the windows' watermarks passed it
                        held.append((topic, key, value))
                        continue
                    await producer.send_raw(topic, value, key=key)
                if held and self.windows_past(max(late[v] for _, _, v in held)):
                    for topic, key, value in held:
                        await producer.send_raw(topic, value, key=key)
                    held.clear()
                self.status.sent = min(len(sends), i + per_tick)
                while (
                    len(self.killed) < len(kill_at)
                    and self.status.sent >= kill_at[len(self.killed)]
                ):
                    await producer.flush()
                    live = [n for n in self.workers if n not in self.killed]
                    victim = "worker-2" if self.kills == 1 else self.rng.choice(live)
                    self.replace_worker(victim, f"worker-{len(self.workers) + 1}")
                # paced by the clock: 10 ticks a second, no drift from the sends' own time
                await asyncio.sleep(max(0.0, began + (tick + 1) / 10 - time.monotonic()))
            # The end of the stream: clicks on every clicks partition, far ahead in event
            # time, move every watermark past every session and window. Sent once the rest
            # went through: the spreading hops (rebalance, shuffle) reorder events, and one
            # that overtook the others would make them late.
            out = self.out
            assert out is not None
            if held:  # (sent without waiting for them: a stall would make others late)
                self.status.phase = "sending (late clicks: waiting for the watermarks)"
                if not await self.wait_for(
                    lambda: self.windows_past(max(late[v] for _, _, v in held)), within=120
                ):
                    raise SystemExit("the windows' watermarks did not pass the late clicks")
                for topic, key, value in held:
                    await producer.send_raw(topic, value, key=key)
            await self.wait_for(lambda: out.counts["enriched"] >= expect, within=90)
            for n, value in enumerate(data.flush):
                await producer.send_raw(p.clicks.name, value, partition=n % 2)
            self.status.sent = self.status.to_send

    def replace_worker(self, victim: str, spare: str) -> None:
        self.workers[victim].kill()  # SIGKILL: no goodbye, open transactions left behind
        self.workers[victim].wait(10)
        self.killed.append(victim)
        self.workers[spare] = worker(spare, self.logs, self.env)
        self.status.phase = f"sending ({victim} killed -9, {spare} started)"

    async def drained(self, out: Outputs, progress: Progress, truth: Truth, within: float) -> None:
        """Until the outputs hold every answer (or `within`), then a little longer: a
        duplicate would show now."""

        def missing() -> list[str]:
            waits = {
                "enriched": out.counts["enriched"] >= truth.clicks_valid,
                "sessions": len(out.sessions) >= len(truth.sessions),
                "totals": out.totals == truth.spend,
                "fraud alerts": len(out.alerts) >= len(truth.alerts),
                "trending": out.merged_trending() == truth.trending,
                "conversions": out.conversions == truth.conversions,
            }
            return [name for name, ok in waits.items() if not ok]

        def done() -> bool:
            self.status.phase = "draining, waiting for " + ", ".join(missing())
            return not missing()

        await self.wait_for(done, within)
        await asyncio.sleep(1.5)

    def stop_workers(self) -> list[int | None]:
        codes: list[int | None] = []
        for name, w in self.workers.items():
            if name in self.killed:
                continue
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
        for name, w in self.workers.items():
            if name in self.killed:
                continue
            try:
                codes.append(w.wait(60))
            except subprocess.TimeoutExpired:
                w.kill()
                codes.append(None)
        return codes


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m apps.ecommerce", description=__doc__)
    parser.add_argument("--short", action="store_true", default=os.environ.get("ECOM_SHORT") == "1")
    parser.add_argument("--seconds", type=float, default=None, help="how long to send for")
    parser.add_argument("--no-kill", action="store_true", help="no kill -9 of a worker")
    parser.add_argument("--workers", type=int, default=2, help="worker processes")
    parser.add_argument("--kills", type=int, default=1, help="kill -9s of a random worker")
    args = parser.parse_args()
    cfg = Config.short() if args.short else Config()
    seconds = args.seconds or (12.0 if args.short else 60.0)
    run = uuid.uuid4().hex[:6]
    os.environ["ECOM_RUN"] = run
    os.environ["ECOM_GAP"] = str(cfg.gap_s)
    os.environ["ECOM_WINDOW"] = str(cfg.window_s)
    os.environ["ECOM_HOP"] = str(cfg.hop_s)
    os.environ["ECOM_TOP"] = str(cfg.top)
    os.environ["ECOM_FRAUD"] = str(cfg.fraud)
    logs = Path(os.environ.get("ECOM_LOGS", f"/tmp/streamkit-ecommerce-{run}"))
    logs.mkdir(parents=True, exist_ok=True)
    console.rule("[bold]streamkit e-commerce demo")
    data = generate(cfg)
    truth = oracle(cfg, data)
    console.print(
        f"Generated {len(data.clicks):,} click records ({cfg.malformed} malformed, "
        f"{truth.late} late by a day), {len(data.purchases):,} purchases, "
        f"{len(data.catalog)} products; {truth.events_per_user['user_123']:,} clicks are "
        "user_123's (the hot key)."
    )
    demo = Demo(cfg, seconds, 0 if args.no_kill else args.kills, logs, args.workers)
    started = time.monotonic()
    out, progress, codes = asyncio.run(demo.run(data, truth))
    elapsed = time.monotonic() - started
    results = checks(out, truth, progress, codes)
    console.print(stages_table(progress))
    console.print(hot_partition(progress))
    console.print(side_tables(out))
    facts = {
        "run": f"{elapsed:.1f}s, {demo.status.to_send:,} records sent",
        "workers": ", ".join(demo.workers)
        + (f" ({', '.join(demo.killed)} killed with SIGKILL midway)" if demo.killed else ""),
        "local sink": f"{out.sink_rows():,} rows in {out.sqlite_path} (and JSON lines in "
        f"{out.jsonl_dir}/), written by the pipeline's sinks"
        + (f"; {out.postgres[0]:,} in PostgreSQL" if out.postgres else ""),
    }
    console.print(summary(out, truth, results, facts))
    ok = all(results.values())
    if not ok:
        console.print(enriched_gaps(data, out, demo.pipeline.clicks.partitions))
    console.print(
        "[bold green]All checks passed.[/]"
        if ok
        else "[bold red]Some checks failed.[/]" + f" Worker logs: {logs}"
    )
    sys.exit(0 if ok else 1)


def enriched_gaps(data: Input, out: Outputs, partitions: int) -> str:
    """For a failed run: which valid clicks the enriched topic lacks or repeats, with where
    each was sent (its position among the click records and the clicks partition)."""
    sent_at = {}
    for i, (key, value) in enumerate(data.clicks):
        with contextlib.suppress(orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
            sent_at[orjson.loads(value)["id"]] = (i, partition_for_key(key or b"", partitions))
    valid = {c["id"]: c for c in data.valid}
    missing = sorted(set(valid) - set(out.enriched_ids), key=lambda c: sent_at.get(c, (-1, -1)))
    repeated = sorted(c for c, n in out.enriched_ids.items() if n > 1)
    shown = ", ".join(
        f"{c} ({valid[c]['user_id']}, record {sent_at.get(c, ('?', '?'))[0]} "
        f"in clicks[{sent_at.get(c, ('?', '?'))[1]}])"
        for c in missing[:30]
    )
    return (
        f"enriched: {len(missing)} valid clicks missing{': ' + shown if shown else ''}; "
        f"{len(repeated)} repeated{': ' + ', '.join(repeated[:30]) if repeated else ''}"
    )


if __name__ == "__main__":
    main()
