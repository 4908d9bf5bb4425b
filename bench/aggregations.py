"""Window aggregations, count windows and table TTL: the cost per event, in one process.

    python -m bench.aggregations [--events N]

N events (200 users, event time 1 ms apart) go through the real window partition classes and
`Table` over a real SQLite store (the task's write-back cache, a checkpoint into SQLite every
50,000 events), with a stand-in for the rest of the task (its collector keeps nothing): no
broker, no decoding, so this is the state side of an event alone. Each case runs in the same
invocation; the figure is the best of three runs, in µs per event.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import streamkit as sk
from streamkit.context import CURRENT_TASK
from streamkit.state.store import open_store
from streamkit.state.table import TablePartition
from streamkit.state.window_open import open_window

USERS = 200
CHECKPOINT = 50_000


class Scope:
    """What state code reads of its task: the event's key and time, a collector."""

    def __init__(self) -> None:
        self.ts = 0
        self.key = b""
        self.tables: dict[str, Any] = {}
        self.windows: dict[str, Any] = {}
        self.collector = self
        self.partition, self.partitions, self.stage_name = 0, 1, "bench"

    def event_time(self) -> int:
        return self.ts

    def event_key(self) -> bytes:
        return self.key

    def append(self, *args: Any, **kw: Any) -> bool:
        return False


def run_case(workdir: Path, events: int, case: str, build: Callable[[sk.App], Any]) -> float:
    """µs per event of one case (a window table, or a table updated with `+=`)."""
    app = sk.App("bench-aggregations")
    out = app.topic("out")
    made = build(app)
    table = made.table if hasattr(made, "aggregation") else made
    if hasattr(made, "aggregation"):
        made.output = out
    store = open_store(workdir / f"{time.monotonic_ns()}.sqlite", {"b": "1"}, [table.name])
    scope = Scope()
    rows = TablePartition(table, 0, store, 100_000, lambda: None, 1)
    scope.tables[table.name] = rows
    token = CURRENT_TASK.set(scope)  # type: ignore[arg-type]
    try:
        window = open_window(made, rows, scope) if hasattr(made, "aggregation") else None  # type: ignore[arg-type]
        if window is not None:
            window.load()
        users = [f"u{i}" for i in range(USERS)]
        keys = [u.encode() for u in users]
        value = {"amount": 12.5}
        started = time.perf_counter()
        for i in range(events):
            scope.ts = 1_700_000_000_000 + i
            scope.key = keys[i % USERS]
            if window is not None:
                window.add(users[i % USERS], value, scope.ts)
                if i % 1000 == 0:
                    window.advance(scope.ts - 1000)
            else:
                table[users[i % USERS]] += 1
            if i % CHECKPOINT == CHECKPOINT - 1:
                store.apply({table.name: rows.take_dirty()}, {})
                rows.flushing = {}
        elapsed = time.perf_counter() - started
    finally:
        CURRENT_TASK.reset(token)
        store.close()
    return elapsed / events * 1e6


CASES: dict[str, Callable[[sk.App], Any]] = {
    "tumbling(60) count": lambda app: app.window("w", sk.tumbling(60), sk.count()),
    "tumbling(60) six aggregations": lambda app: app.window(
        "w",
        sk.tumbling(60),
        sk.aggregate(
            sk.count(),
            sk.sum_of("amount"),
            sk.mean_of("amount"),
            sk.first_of("amount"),
            sk.last_of("amount"),
            sk.collect("amount", limit=10),
        ),
    ),
    "tumbling(60) custom aggregator": lambda app: app.window(
        "w",
        sk.tumbling(60),
        sk.aggregator(lambda: 0, lambda acc, v: acc + v["amount"], lambda a, b: a + b),
    ),
    "session(5) count": lambda app: app.window("w", sk.session(5), sk.count()),
    "tumbling_count(100) count": lambda app: app.window("w", sk.tumbling_count(100), sk.count()),
    "sliding_count(10) mean": lambda app: app.window(
        "w", sk.sliding_count(10), sk.mean_of("amount")
    ),
    "table +=": lambda app: app.table("t", default=int),
    "table += with ttl (event time)": lambda app: app.table("t", default=int, ttl=60),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.aggregations", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'case':34} {'µs/event':>9}")
        for case, build in CASES.items():
            best = min(run_case(Path(tmp), args.events, case, build) for _ in range(3))
            print(f"{case:34} {best:9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
