"""The join's state alone: `JoinPartition` over a real SQLite store, no broker, CPU per record.

    python -m bench.join_state [--records N] [--every K]

One join partition's share of pipeline C (`bench/pipelines.py`: 80 % clicks, 20 % purchases,
2,500 users, event times 80 ms apart, an inner join within 600 s, grace 3,600 s, the
watermark just behind each record), the store's cache of 100,000 rows, and a checkpoint
every K records: the dirty rows taken, counted as changelog records, and written to SQLite
with the store's purge rule. Prints the process's CPU per record, the pairs, the changelog
records and the rows left in SQLite. Run it under two checkouts (`PYTHONPATH`) to compare.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import streamkit as sk
from streamkit.joins import LEFT, RIGHT, StreamJoin, join_spec, pair
from streamkit.serde import codec_for
from streamkit.state.store import open_store
from streamkit.state.stream_join import JoinPartition
from streamkit.state.table import TablePartition

BASE_MS = 1_700_000_000_000


def run(records: int, every: int) -> str:
    app = sk.App("join-state")
    join = StreamJoin(
        "j", join_spec(within=600, between=None, grace=3600, how="inner", what="j"), pair
    )
    app.join_state(join)
    rng = random.Random(1)
    pairs, changelog = [0], 0

    def emit(*_: Any) -> None:
        pairs[0] += 1

    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp) / "0.sqlite", {"t": "1"}, ["j"])
        purge = getattr(join.table, "purge", None)  # a checkout before purge rules has none
        store.purges = {"j": purge} if purge is not None else {}
        rows = TablePartition(join.table, 0, store, 100_000, lambda: None)
        json = codec_for(None)
        part = JoinPartition(join, rows, (json, json), lambda side, ts, wm: None)
        part.emit = emit
        part.load()
        started = time.process_time()
        for i in range(records):
            ts = BASE_MS + i * 80
            kind, side = ("click", LEFT) if rng.random() < 0.8 else ("purchase", RIGHT)
            user = f"u{rng.randrange(2500)}"
            part.advance(ts - 1)
            part.push(side, user.encode(), ts, {"kind": kind, "id": i, "user_id": user}, i)
            if (i + 1) % every == 0:
                changes = rows.take_dirty()
                changelog += len(changes)
                store.apply({"j": changes}, {})
                rows.flushing = {}
        cpu = time.process_time() - started
        left = store.count("j")
        store.close()
    return (
        f"{records:,} records: {cpu / records * 1e6:.2f} µs CPU per record, {pairs[0]:,} pairs, "
        f"{changelog:,} changelog records, {part.buffered:,} buffered, {left:,} rows in SQLite"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=250_000)
    parser.add_argument("--every", type=int, default=7_000)
    args = parser.parse_args(argv)
    print(run(args.records, args.every))


if __name__ == "__main__":
    main()
