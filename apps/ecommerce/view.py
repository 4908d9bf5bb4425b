"""The demo's terminal view (rich) and its closing summary with the checks."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from apps.ecommerce.generator import HOT_USER, Truth
from apps.ecommerce.monitor import Outputs, Progress
from streamkit.keys import partition_for_key


@dataclass
class Status:
    elapsed: float
    sent: int
    to_send: int
    phase: str


def _ts(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime("%H:%M")


def _rates(rate: dict[int, float]) -> str:
    return " ".join(f"{rate.get(p, 0):4.0f}" for p in sorted(rate))


def stages_table(progress: Progress) -> Table:
    table = Table(
        title="Stages: committed vs end offsets of their inputs (incl. watermark records)",
        expand=True,
    )
    for col, justify in [
        ("stage", "left"),
        ("input", "left"),
        ("tasks", "right"),
        ("events/s per partition", "left"),
        ("records done", "right"),
        ("lag", "right"),
    ]:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for s in progress.stages:
        short = s.topic.split("-", 2)[-1]
        table.add_row(
            s.name, short, str(s.partitions), _rates(s.rate), f"{s.processed:,}", f"{s.lag:,}"
        )
    return table


def hot_partition(progress: Progress) -> Text:
    """The per-partition load of the sessions stage (key_by user): the hot key shows."""
    stage = next(s for s in progress.stages if s.name == "by-user")
    loads = {p: stage.end.get(p, 0) for p in range(stage.partitions)}
    total = sum(loads.values()) or 1
    hottest = hottest_partition(progress)
    text = Text("key_by user, records per partition: ")
    for p, n in loads.items():
        style = "bold red" if p == hottest else ""
        text.append(f"p{p} {n:,} ({100 * n / total:.0f}%)  ", style=style)
    return text


def side_tables(out: Outputs) -> Table:
    spenders = Table(title="Top spenders (totals topic)")
    spenders.add_column("user")
    spenders.add_column("spent", justify="right")
    for user, cents in sorted(out.totals.items(), key=lambda kv: -kv[1])[:5]:
        spenders.add_row(user, f"{cents / 100:,.2f}")
    trend = Table(title="Trending products")
    trend.add_column("product")
    trend.add_column("clicks", justify="right")
    newest = out.top_trending()
    if newest is not None:
        (start, end), ranked = newest
        trend.title = f"Trending {_ts(start)}-{_ts(end)} (event time)"
        for pid, n in ranked:
            trend.add_row(pid, str(n))
    hot = Table(title="Hottest keys (enriched)")
    hot.add_column("user")
    hot.add_column("events", justify="right")
    for user, n in out.per_user.most_common(5):
        hot.add_row(user, str(n))
    grid = Table.grid(expand=True, padding=(0, 2))
    grid.add_row(spenders, trend, hot)
    return grid


def render(progress: Progress, out: Outputs, status: Status) -> RenderableType:
    counts = out.counts
    line = Text.assemble(
        (f"{status.elapsed:5.1f}s ", "bold"),
        f"{status.phase} | sent {status.sent:,}/{status.to_send:,} | ",
        f"sessions closed {counts['sessions']:,} | enriched {counts['enriched']:,} | ",
        (f"late {counts['late-sessions'] + counts['late-trending']} ", "yellow"),
        (f"DLQ {counts['dlq']} ", "red"),
        f"| total lag {progress.total_lag:,}",
    )
    return Panel(
        Group(line, stages_table(progress), hot_partition(progress), side_tables(out)),
        title="streamkit e-commerce demo",
    )


def progress_line(progress: Progress, out: Outputs, status: Status) -> str:
    """One plain line for logs and non-terminals."""
    c = out.counts
    return (
        f"{status.elapsed:5.1f}s {status.phase}: sent {status.sent}/{status.to_send}, "
        f"enriched {c['enriched']}, sessions {c['sessions']}, totals {len(out.totals)} users, "
        f"late {c['late-sessions'] + c['late-trending']}, DLQ {c['dlq']}, "
        f"lag {progress.total_lag}"
    )


def hottest_partition(progress: Progress) -> int:
    stage = next(s for s in progress.stages if s.name == "by-user")
    return max(range(stage.partitions), key=lambda p: stage.end.get(p, 0))


def checks(
    out: Outputs, truth: Truth, progress: Progress, worker_codes: list[int | None]
) -> dict[str, bool]:
    got_sessions = sorted(out.sessions)
    trending = out.merged_trending()
    dupes = sum(n - 1 for n in out.enriched_ids.values() if n > 1)
    return {
        f"{HOT_USER}'s spend = ground truth": out.totals.get(HOT_USER) == truth.spend[HOT_USER],
        "every user's spend = ground truth": out.totals == truth.spend,
        "sessions (user, start, end, pages, spend) = the oracle's": got_sessions == truth.sessions,
        "DLQ count = malformed records sent": out.counts["dlq"] == truth.malformed
        and set(out.dead_reasons) == {"DecodeError"},
        "late events routed (sessions and trending) = late clicks sent": out.counts["late-sessions"]
        == truth.late
        and out.counts["late-trending"] == truth.late,
        "enriched events = valid clicks, each once, all joined": out.counts["enriched"]
        == truth.clicks_valid
        and dupes == 0
        and out.enriched_ok == truth.clicks_valid,
        "sink rows = enriched events, each once (SQLite, JSON lines, PostgreSQL)": set(
            out.sink_counts()
        )
        == {truth.clicks_valid},
        "trending top-k of every window = the oracle's": trending == truth.trending,
        "fraud alerts (user, minute, purchases) = the oracle's, each once": sorted(out.alerts)
        == truth.alerts,
        "conversions (view ⋈ purchase within 30 min, left join) = the oracle's, each once": (
            out.conversions == truth.conversions
        ),
        f"the hot partition of key_by user is {HOT_USER}'s": hottest_partition(progress)
        == partition_for_key(HOT_USER.encode(), 4),
        "the surviving workers stopped cleanly": all(c == 0 for c in worker_codes if c is not None),
    }


def summary(
    out: Outputs, truth: Truth, results: dict[str, bool], facts: dict[str, Any]
) -> RenderableType:
    lines = Table.grid(padding=(0, 2))
    lines.add_column(justify="right", style="bold")
    lines.add_column()
    for k, v in facts.items():
        lines.add_row(k, str(v))
    lines.add_row(
        f"{HOT_USER} spent",
        f"{out.totals.get(HOT_USER, 0) / 100:,.2f} "
        f"(ground truth {truth.spend[HOT_USER] / 100:,.2f})",
    )
    lines.add_row(
        "sessions closed",
        f"{len(out.sessions):,} (oracle {len(truth.sessions):,}), "
        f"{sum(s[3] for s in out.sessions):,} pages, "
        f"{sum(s[4] for s in out.sessions) / 100:,.2f} spent in sessions",
    )
    views, converted = out.conversion_rate()
    want = {view for view, bought in truth.conversions if bought}
    lines.add_row(
        "conversion",
        f"{converted:,} of {views:,} views bought within 30 min "
        f"(oracle {len(want):,} of {len({v for v, _ in truth.conversions}):,}); "
        + ", ".join(f"{p} {c}/{n}" for p, n, c in out.conversion_per_product()[:3]),
    )
    lines.add_row(
        "late / DLQ",
        f"{out.counts['late-sessions']} + {out.counts['late-trending']} late "
        f"(sent {truth.late}), {out.counts['dlq']} dead letters (sent {truth.malformed})",
    )
    users = sorted({a[0] for a in out.alerts})
    lines.add_row(
        "fraud alerts",
        f"{len(out.alerts):,} (oracle {len(truth.alerts):,}) for {len(users)} users "
        f"({', '.join(users[:4])}{', ...' * (len(users) > 4)})",
    )
    verdicts = Text()
    for name, ok in results.items():
        verdicts.append("PASS " if ok else "FAIL ", style="bold green" if ok else "bold red")
        verdicts.append(name + "\n")
    return Group(lines, verdicts)
