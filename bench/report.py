"""The peers benchmark's results: one Run per timed run, the summary table and the plot.

`python -m bench.report RESULTS.json OUT.png` draws the plot; it runs in the bench virtualenv
(matplotlib is a bench-only package), so this module imports nothing but the standard library.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Run:
    system: str
    pipeline: str
    mode: str  # "throughput" (pre-loaded input), "paced" (latency) or "warm-up" (unreported)
    guarantee: str
    rep: int
    keys: int = 10_000  # users in the input (A and B)
    ok: bool = False
    error: str = ""
    total_s: float | None = None  # launch → every answer right and the input committed
    startup_s: float | None = None  # launch → first committed output
    e2e_rate: float | None = None  # events / total_s
    steady_rate: float | None = None  # the output count's slope after start-up (observer.py)
    cpu_us_per_event: float | None = None
    broker_cpu_us_per_event: float | None = None  # the local broker's CPU over the same run
    peak_rss_mb: float | None = None  # summed over the system's processes
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    paced_rate: float | None = None  # events/s the paced sender achieved
    duplicates: int = 0  # outputs beyond N (at-least-once allows them)
    series: list[tuple[float, int]] = field(default_factory=list)  # (s, outputs), every 1 s

    def set_rates(
        self,
        n: int,
        seconds: float,
        steady: float | None,
        cpu: float,
        rss: float,
        broker_cpu: float | None = None,
    ) -> None:
        self.total_s = seconds
        self.e2e_rate = n / seconds
        self.steady_rate = steady
        self.cpu_us_per_event = cpu / n * 1e6
        self.broker_cpu_us_per_event = None if broker_cpu is None else broker_cpu / n * 1e6
        self.peak_rss_mb = rss

    def set_latency(
        self, sent: Sequence[float], achieved: float, seen_at: dict[int, float]
    ) -> None:
        """Latencies of the events sent after the first 10 % and after the first answer was
        read (events queued while the system was still starting are not steady state)."""
        first = min(seen_at.values())
        skip = len(sent) // 10
        # every event of A and B has its answer; in C only those that complete a pair
        lat = sorted(
            (seen_at[i] - sent[i]) * 1000
            for i in range(skip, len(sent))
            if i in seen_at and sent[i] >= first
        )
        self.p50_ms = lat[len(lat) // 2]
        self.p99_ms = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        self.max_ms = lat[-1]
        self.paced_rate = achieved

    def status(self) -> str:
        if not self.ok:
            return f"FAILED: {self.error}"
        if self.mode == "paced":
            return f"p50 {self.p50_ms:,.0f} ms, p99 {self.p99_ms:,.0f} ms"
        steady = "—" if self.steady_rate is None else f"{self.steady_rate:,.0f}"
        broker = self.broker_cpu_us_per_event
        return (
            f"{self.e2e_rate:,.0f} events/s, steady {steady}, start-up {self.startup_s:.2f} s, "
            f"{self.cpu_us_per_event:.1f} µs/event"
            + ("" if broker is None else f" (broker {broker:.1f})")
            + f", {self.peak_rss_mb:,.0f} MB"
        )


def _median(runs: Sequence[dict[str, Any]], attr: str) -> float | None:
    values = [r[attr] for r in runs if r.get(attr) is not None]
    return statistics.median(values) if values else None


def _spread(runs: Sequence[dict[str, Any]], attr: str) -> tuple[float, float] | None:
    values = [r[attr] for r in runs if r.get(attr) is not None]
    return (min(values), max(values)) if values else None


def summarize(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per (pipeline, keys, mode, guarantee, system): medians, spreads, ok count."""
    rows = []
    keys = sorted({(r.pipeline, r.keys, r.mode, r.guarantee, r.system) for r in runs})
    for pipeline, users, mode, guarantee, system in keys:
        key = (pipeline, users, mode, guarantee, system)
        mine = [
            r.__dict__ for r in runs if (r.pipeline, r.keys, r.mode, r.guarantee, r.system) == key
        ]
        ok = [r for r in mine if r["ok"]]
        share = [
            {"share": r["startup_s"] / r["total_s"]}
            for r in ok
            if r["startup_s"] is not None and r["total_s"]
        ]
        rows.append(
            {
                "pipeline": pipeline,
                "keys": users,
                "mode": mode,
                "guarantee": guarantee,
                "system": system,
                "ok": len(ok),
                "runs": len(mine),
                "e2e": _median(ok, "e2e_rate"),
                "spread": _spread(ok, "e2e_rate"),
                "steady": _median(ok, "steady_rate"),
                "steady_spread": _spread(ok, "steady_rate"),
                "startup_s": _median(ok, "startup_s"),
                "startup_spread": _spread(ok, "startup_s"),
                "startup_share": _median(share, "share"),
                "cpu_us": _median(ok, "cpu_us_per_event"),
                "broker_cpu_us": _median(ok, "broker_cpu_us_per_event"),
                "rss": _median(ok, "peak_rss_mb"),
                "p50_ms": _median(ok, "p50_ms"),
                "p99_ms": _median(ok, "p99_ms"),
                "paced_rate": _median(ok, "paced_rate"),
                "duplicates": sum(r["duplicates"] for r in ok),
                "errors": sorted({r["error"] for r in mine if not r["ok"]}),
            }
        )
    return rows


def _num(v: float | None, fmt: str = ",.0f") -> str:
    return "—" if v is None else format(v, fmt)


def _range(v: tuple[float, float] | None, fmt: str = ",.0f") -> str:
    return "—" if v is None else f"{v[0]:{fmt}}-{v[1]:{fmt}}"


def _ratio(row: dict[str, Any], ref: dict[str, float | None]) -> str:
    """streamkit's median end-to-end rate over this row's, same guarantee; the raw ceilings
    have one guarantee, so both of streamkit's are compared with them."""
    if row["system"].startswith("raw"):
        parts = [
            f"{tag} {ref[g] / row['e2e']:.0%}"
            for tag, g in (("EOS", "exactly_once"), ("ALO", "at_least_once"))
            if ref.get(g) and row["e2e"]
        ]
        return ", ".join(parts) or "—"
    own = ref.get(row["guarantee"])
    return f"{own / row['e2e']:.2f}x" if own and row["e2e"] else "—"


def markdown(rows: list[dict[str, Any]], hardware: dict[str, float], args: dict[str, Any]) -> str:
    lines = [
        f"{args['events']:,} events per throughput run ({args['keys']:,} keys), commit interval "
        f"{args['commit_interval']:g} s, {args['reps']} reps in rotated order: medians and "
        f"min-max. Load average {args.get('load', '?')}.",
    ]
    if hardware:
        lines.append(
            f"Hardware ceiling (Kafka's perf tools, 100-byte records, 4 partitions): producer "
            f"{hardware['producer']:,.0f} records/s, consumer {hardware['consumer']:,.0f}"
            " records/s."
        )
    for pipeline, users in sorted({(r["pipeline"], r["keys"]) for r in rows}):
        mine = [
            r
            for r in rows
            if (r["pipeline"], r["keys"], r["mode"]) == (pipeline, users, "throughput")
        ]
        ref = {r["guarantee"]: r["e2e"] for r in mine if r["system"] == "streamkit"}
        lines += (
            []
            if not mine
            else [
                "",
                f"Pipeline {pipeline}, {users:,} keys, throughput",
                "",
                "| guarantee | system | ok | end-to-end events/s | steady events/s | start-up s "
                "| start-up share | streamkit / system | CPU µs/event | broker CPU µs/event "
                "| peak RSS MB | duplicates |",
                "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
            ]
        )
        for r in mine:
            lines.append(
                f"| {r['guarantee']} | {r['system']} | {r['ok']}/{r['runs']} "
                f"| {_num(r['e2e'])} ({_range(r['spread'])}) "
                f"| {_num(r['steady'])} ({_range(r['steady_spread'])}) "
                f"| {_num(r['startup_s'], '.2f')} ({_range(r['startup_spread'], '.2f')}) "
                f"| {_num(r['startup_share'], '.1%')} | {_ratio(r, ref)} "
                f"| {_num(r['cpu_us'], '.1f')} | {_num(r.get('broker_cpu_us'), '.1f')} "
                f"| {_num(r['rss'])} | {r['duplicates']} |"
            )
        paced = [r for r in rows if (r["pipeline"], r["keys"]) == (pipeline, users)]
        paced = [r for r in paced if r["mode"] == "paced"]
        if paced:
            bound = args["commit_interval"] * 1000 + 100
            lines += [
                "",
                f"Pipeline {pipeline}, latency at {args['paced_rate']:,.0f} events/s "
                f"({args['paced_events']:,} events; those sent in the first 10 % or before the "
                "first answer was read left out); the goal: p99 under "
                f"exactly-once ≤ commit interval + 100 ms = {bound:,.0f} ms",
                "",
                "| guarantee | system | ok | rate sent events/s | p50 ms | p99 ms |",
                "|---|---|--:|--:|--:|--:|",
            ]
            for r in paced:
                lines.append(
                    f"| {r['guarantee']} | {r['system']} | {r['ok']}/{r['runs']} "
                    f"| {_num(r['paced_rate'])} | {_num(r['p50_ms'])} | {_num(r['p99_ms'])} |"
                )
    failed = [(r["pipeline"], r["system"], r["guarantee"], e) for r in rows for e in r["errors"]]
    if failed:
        lines += ["", "Failed runs:"] + [f"- {p} {s} {g}: {e}" for p, s, g, e in failed]
    return "\n".join(lines)


def plot(results: dict[str, Any], out: str) -> None:
    """Bars of median end-to-end events/s per system, one panel per pipeline and guarantee."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["summary"] if r["mode"] == "throughput" and r["e2e"]]
    panels = sorted({(r["pipeline"], r.get("keys", 10_000), r["guarantee"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (pipeline, users, guarantee) in zip(axes[0], panels, strict=True):
        mine = sorted(
            (
                r
                for r in rows
                if (r["pipeline"], r.get("keys", 10_000), r["guarantee"])
                == (pipeline, users, guarantee)
            ),
            key=lambda r: r["e2e"],
        )
        names = [r["system"] for r in mine]
        values = [r["e2e"] for r in mine]
        lows = [r["e2e"] - r["spread"][0] for r in mine]
        highs = [r["spread"][1] - r["e2e"] for r in mine]
        colours = ["tab:orange" if n.startswith("streamkit") else "tab:blue" for n in names]
        ax.barh(names, values, xerr=[lows, highs], color=colours)
        keys = "" if users == 10_000 else f", {users:,} keys"
        ax.set_title(f"pipeline {pipeline}, {guarantee.replace('_', '-')}{keys}")
        ax.set_xlabel("events/s (median, min-max)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        plot(json.load(f), sys.argv[2])
