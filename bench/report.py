"""The peers benchmark's results: one Run per timed run, the summary table and the plot.

`python -m bench.report RESULTS.json OUT.png` draws the plot; it runs in the bench virtualenv
(matplotlib is a bench-only package), so this module imports nothing but the standard library.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class Line(Protocol):
    p10: float | None
    p90: float | None


@dataclass
class Run:
    system: str
    pipeline: str
    mode: str  # "throughput" (pre-loaded input) or "paced" (latency)
    guarantee: str
    rep: int
    ok: bool = False
    error: str = ""
    total_s: float | None = None
    e2e_rate: float | None = None
    steady_rate: float | None = None
    cpu_us_per_event: float | None = None
    peak_rss_mb: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    duplicates: int = 0  # outputs beyond N (at-least-once allows them)

    def set_rates(self, n: int, seconds: float, line: Line, cpu: float, rss: float) -> None:
        self.total_s = seconds
        self.e2e_rate = n / seconds
        if line.p10 is not None and line.p90 is not None and line.p90 > line.p10:
            self.steady_rate = 0.8 * n / (line.p90 - line.p10)
        self.cpu_us_per_event = cpu / n * 1e6
        self.peak_rss_mb = rss

    def set_latency(self, sent: Sequence[float], seen_at: dict[int, float]) -> None:
        """Latencies of the events after the first 10 % (start-up is not steady state)."""
        skip = len(sent) // 10
        # every event of A and B has its answer; in C only those that complete a pair
        lat = sorted((seen_at[i] - sent[i]) * 1000 for i in range(skip, len(sent)) if i in seen_at)
        self.p50_ms = lat[len(lat) // 2]
        self.p99_ms = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        self.max_ms = lat[-1]

    def status(self) -> str:
        if not self.ok:
            return f"FAILED: {self.error}"
        if self.mode == "paced":
            return f"p50 {self.p50_ms:,.0f} ms, p99 {self.p99_ms:,.0f} ms"
        return f"{self.e2e_rate:,.0f} events/s"


def _median(runs: Sequence[dict[str, Any]], attr: str) -> float | None:
    values = [r[attr] for r in runs if r.get(attr) is not None]
    return statistics.median(values) if values else None


def summarize(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per (pipeline, mode, guarantee, system): medians, spread, ok count."""
    rows = []
    keys = sorted({(r.pipeline, r.mode, r.guarantee, r.system) for r in runs})
    for pipeline, mode, guarantee, system in keys:
        key = (pipeline, mode, guarantee, system)
        mine = [r.__dict__ for r in runs if (r.pipeline, r.mode, r.guarantee, r.system) == key]
        ok = [r for r in mine if r["ok"]]
        rates = [r["e2e_rate"] for r in ok if r["e2e_rate"] is not None]
        rows.append(
            {
                "pipeline": pipeline,
                "mode": mode,
                "guarantee": guarantee,
                "system": system,
                "ok": len(ok),
                "runs": len(mine),
                "e2e": _median(ok, "e2e_rate"),
                "steady": _median(ok, "steady_rate"),
                "spread": (min(rates), max(rates)) if rates else None,
                "cpu_us": _median(ok, "cpu_us_per_event"),
                "rss": _median(ok, "peak_rss_mb"),
                "p50_ms": _median(ok, "p50_ms"),
                "p99_ms": _median(ok, "p99_ms"),
                "duplicates": sum(r["duplicates"] for r in ok),
                "errors": sorted({r["error"] for r in mine if not r["ok"]}),
            }
        )
    return rows


def _num(v: float | None, fmt: str = ",.0f") -> str:
    return "—" if v is None else format(v, fmt)


def markdown(rows: list[dict[str, Any]], hardware: dict[str, float], args: dict[str, Any]) -> str:
    lines = [
        f"{args['events']:,} events per throughput run, commit interval "
        f"{args['commit_interval']:g} s, {args['reps']} reps in rotated order (median, min-max).",
    ]
    if hardware:
        lines.append(
            f"Hardware ceiling (Kafka's perf tools, 100-byte records, 4 partitions): producer "
            f"{hardware['producer']:,.0f} records/s, consumer {hardware['consumer']:,.0f}"
            " records/s."
        )
    for pipeline in sorted({r["pipeline"] for r in rows}):
        mine = [r for r in rows if r["pipeline"] == pipeline and r["mode"] == "throughput"]
        ref = {r["guarantee"]: r["e2e"] for r in mine if r["system"] == "streamkit"}
        lines += [
            "",
            f"Pipeline {pipeline}, throughput",
            "",
            "| guarantee | system | ok | end-to-end events/s | spread | steady events/s "
            "| streamkit / system | CPU µs/event | peak RSS MB | duplicates |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for r in mine:
            spread = "—" if r["spread"] is None else f"{r['spread'][0]:,.0f}-{r['spread'][1]:,.0f}"
            own = ref.get(r["guarantee"])
            if r["system"].startswith("raw"):  # the ceilings have one guarantee: compare both
                own = ref.get("exactly_once")
                ratio = "—" if not (own and r["e2e"]) else f"EOS {own / r['e2e']:.0%}"
                alo = ref.get("at_least_once")
                if alo and r["e2e"]:
                    ratio += f", ALO {alo / r['e2e']:.0%}"
            else:
                ratio = f"{own / r['e2e']:.2f}x" if own and r["e2e"] else "—"
            lines.append(
                f"| {r['guarantee']} | {r['system']} | {r['ok']}/{r['runs']} | {_num(r['e2e'])} "
                f"| {spread} | {_num(r['steady'])} | {ratio} | {_num(r['cpu_us'], '.1f')} "
                f"| {_num(r['rss'])} | {r['duplicates']} |"
            )
        paced = [r for r in rows if r["pipeline"] == pipeline and r["mode"] == "paced"]
        if paced:
            lines += [
                "",
                f"Pipeline {pipeline}, latency at {args['paced_rate']:,.0f} events/s "
                f"({args['paced_events']:,} events, first 10 % left out)",
                "",
                "| guarantee | system | ok | p50 ms | p99 ms |",
                "|---|---|--:|--:|--:|",
            ]
            for r in paced:
                lines.append(
                    f"| {r['guarantee']} | {r['system']} | {r['ok']}/{r['runs']} "
                    f"| {_num(r['p50_ms'])} | {_num(r['p99_ms'])} |"
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
    panels = sorted({(r["pipeline"], r["guarantee"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (pipeline, guarantee) in zip(axes[0], panels, strict=True):
        mine = sorted(
            (r for r in rows if (r["pipeline"], r["guarantee"]) == (pipeline, guarantee)),
            key=lambda r: r["e2e"],
        )
        names = [r["system"] for r in mine]
        values = [r["e2e"] for r in mine]
        lows = [r["e2e"] - r["spread"][0] for r in mine]
        highs = [r["spread"][1] - r["e2e"] for r in mine]
        colours = ["tab:orange" if n == "streamkit" else "tab:blue" for n in names]
        ax.barh(names, values, xerr=[lows, highs], color=colours)
        ax.set_title(f"pipeline {pipeline}, {guarantee.replace('_', '-')}")
        ax.set_xlabel("events/s (median, min-max)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        plot(json.load(f), sys.argv[2])
