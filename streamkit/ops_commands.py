"""Bodies of the operator commands `streamkit status`, `tables get|scan` and `reset`.

They talk to the broker (admin API) and to the workers' HTTP endpoints; `cli.py` only parses
arguments and prints. Each returns lines of text, or raises an error whose message says what
to do."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from streamkit.app import App
from streamkit.runtime import webauth
from streamkit.runtime.admin import open_admin
from streamkit.runtime.group import (
    describe_group,
    group_lag,
    live_endpoints,
    reset_app,
    reset_topics,
)
from streamkit.runtime.lag import exact_lags

HTTP_TIMEOUT = 5.0


class NoWorker(Exception):
    """No live worker answered over HTTP."""


async def get_json(
    session: aiohttp.ClientSession, endpoint: str, path: str, params: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with session.get(f"http://{endpoint}{path}", params=params or {}) as resp:
        return resp.status, orjson.loads(await resp.read())


def _session(app: App) -> aiohttp.ClientSession:
    """Sends the bearer token (`web_token`) when the workers require one."""
    return aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT),
        headers=webauth.auth_headers(app.settings),
    )


# -- status ------------------------------------------------------------------------------------


async def status_lines(app: App) -> list[str]:
    admin = await open_admin(app.settings, f"{app.id}-cli")
    try:
        group = await describe_group(admin, app.id)
        lags = await group_lag(app, admin)
    finally:
        await admin.close()
    exact = await exact_lags(app.settings, f"{app.id}-status", lags)
    lines = [f"app {app.id}: group {group.state}, {len(group.members)} member(s)"]
    owner = {}
    for m in group.members:
        lines.append(
            f"  member {m.member_id}  client {m.client_id}  host {m.host}  "
            f"http {m.endpoint or '-'}  partitions {len(m.assigned)}"
        )
        for tp in m.assigned:
            owner[tp] = m.client_id
    lines.append("")
    lines.append(f"  {'topic':44} {'part':>4} {'committed':>10} {'end':>10} {'lag':>8}  owner")
    total = 0
    for row in lags:
        committed = "-" if row.committed is None else str(row.committed)
        lag = exact.get((row.topic, row.partition), row.lag)
        total += lag
        lines.append(
            f"  {row.topic:44} {row.partition:>4} {committed:>10} {row.end:>10} {lag:>8}  "
            f"{owner.get((row.topic, row.partition), '-')}"
        )
    lines.append(f"  total lag {total}")
    lines.append("")
    rates: dict[str, float] = defaultdict(float)
    totals: dict[str, int] = defaultdict(int)
    async with _session(app) as session:
        for m in group.members:
            if not m.endpoint:
                lines.append(f"  worker {m.client_id}: no HTTP endpoint (web_enabled=false)")
                continue
            try:
                code, body = await get_json(session, m.endpoint, "/status")
            except (aiohttp.ClientError, TimeoutError) as exc:
                lines.append(f"  worker {m.client_id} at {m.endpoint}: unreachable ({exc!r})")
                continue
            if code != 200:
                lines.append(f"  worker {m.client_id} at {m.endpoint}: HTTP {code}")
                continue
            checkpoint = body.get("last_checkpoint", {})
            lines.append(
                f"  worker {body.get('worker')} ({body.get('guarantee')}): last checkpoint "
                f"{checkpoint.get('age_s')}s ago, {checkpoint.get('count')} checkpoints, "
                f"{checkpoint.get('commit_failures')} commit failures"
            )
            for name, stage in body.get("stages", {}).items():
                rates[name] += float(stage.get("rate", 0.0))
                totals[name] += int(stage.get("events_in", 0))
    if rates or totals:
        lines.append("")
        lines.append(f"  {'stage':30} {'events/s':>10} {'events in':>12}  (workers reached)")
        for name in sorted(totals):
            lines.append(f"  {name:30} {rates[name]:>10.1f} {totals[name]:>12}")
    return lines


# -- tables get / scan -------------------------------------------------------------------------


async def ask_any_worker(app: App, path: str, params: dict[str, str]) -> tuple[int, Any]:
    """Ask the first worker that answers; it routes the query to the owner."""
    endpoints = await live_endpoints(app)
    if not endpoints:
        raise NoWorker(f"no live worker of {app.id} advertises an HTTP endpoint")
    problems = []
    async with _session(app) as session:
        for endpoint in endpoints:
            try:
                return await get_json(session, endpoint, path, params)
            except (aiohttp.ClientError, TimeoutError) as exc:
                problems.append(f"{endpoint}: {exc!r}")
    raise NoWorker(f"no worker of {app.id} answered: {'; '.join(problems)}")


# -- reset -------------------------------------------------------------------------------------


def reset_plan(app: App, *, dead_letters: bool, state_dir: Path | None, local_only: bool) -> str:
    lines = [f"reset app {app.id}:"]
    if not local_only:
        topics = reset_topics(app, dead_letters=dead_letters)
        lines.append(f"  delete topics: {', '.join(topics) or 'none'}")
        sources = sorted(app.source_topics)
        lines.append(f"  commit the earliest offsets of {', '.join(sources)} for group {app.id}")
    if state_dir is not None:
        lines.append(f"  remove local state {state_dir / app.id}")
    return "\n".join(lines)


async def reset_lines(
    app: App, *, dead_letters: bool, state_dir: Path | None, local_only: bool
) -> list[str]:
    report = await reset_app(
        app,
        dead_letters=dead_letters,
        state_dir=state_dir,
        topics_and_offsets=not local_only,
    )
    lines = []
    if not local_only:
        lines.append(f"deleted topics: {', '.join(report.deleted_topics) or 'none existed'}")
        by_topic: dict[str, list[str]] = defaultdict(list)
        for tp, offset in sorted(report.offsets.items()):
            by_topic[tp.topic].append(f"{tp.partition}:{offset}")
        for topic, parts in sorted(by_topic.items()):
            lines.append(f"group {app.id} at earliest on {topic} ({', '.join(parts)})")
    if state_dir is not None:
        removed = report.removed_state
        lines.append(f"removed {removed}" if removed else f"no local state in {state_dir}")
    return lines
