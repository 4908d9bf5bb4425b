"""Tumbling, hopping and sliding windows forget their closed rows with no tombstone: the store
deletes the rows each write's watermark row closed (`closed_rows`), loading skips them, and
the changelog keeps records by time retention. Checked on the real window partitions over real
SQLite stores, without a broker: a restart from the store, or from a replay of the changelog
in batches of any size, gives every window's final result exactly once."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

import streamkit as sk
from streamkit.eventtime import NO_WATERMARK, WatermarkTracker
from streamkit.runtime.window_query import windows_of
from streamkit.state.store import PartitionStore, open_store
from streamkit.state.table import TablePartition
from streamkit.state.window_open import open_window
from streamkit.state.window_table import WATERMARK_ROW, WindowTable, closed_hold, closed_rows
from streamkit.windows import Hopping, Sliding, Tumbling
from tests.test_windows_logic import FakeTask, events_strategy, oracle, sliding_oracle

_START = struct.Struct(">q")


def window_app(kind: Any, lateness_ms: int) -> WindowTable:
    """Sums, or counts for sliding windows (as their oracle)."""
    app = sk.App("purge")
    agg = sk.count() if isinstance(kind, Sliding) else sk.sum_of()
    return app.window("w", kind, agg, allowed_lateness=lateness_ms / 1000, output=app.topic("out"))


class Run:
    """One task's window partition over a store: events in, checkpoints (the changes taken as
    the changelog's records, then written to the store), outputs kept."""

    def __init__(self, wt: WindowTable, store: PartitionStore, ooo: int, top: int | None) -> None:
        store.purges = {"w": wt.table.purge}  # type: ignore[dict-item]
        self.wt, self.store = wt, store
        self.task = FakeTask()
        self.rows = TablePartition(wt.table, 0, store, 50, lambda: None)
        self.part = open_window(wt, self.rows, self.task)  # type: ignore[arg-type]
        self.tracker = WatermarkTracker(ooo)
        watermark = self.part.load()
        if top is not None:  # the partition time restored with the offsets
            self.tracker.observe(top)
        assert watermark <= self.tracker.current

    def event(self, ts: int, key: str, value: int) -> None:
        self.task.ts = ts
        if self.tracker.observe(ts):
            self.part.advance(self.tracker.current)
        self.part.add(key, value, None)

    def checkpoint(self) -> dict[bytes, bytes | None]:
        changes = dict(self.rows.take_dirty())
        self.store.apply({"w": changes}, {})
        self.rows.flushing = {}  # written
        return changes


def closed_in_store(wt: WindowTable, store: PartitionStore) -> list[int]:
    """Times (start, or a sliding window's end) of stored rows (time >= 0) that the stored
    watermark closed."""
    hold = closed_hold(wt.kind, wt.allowed_lateness_ms)
    stored = dict(store.scan("w"))
    raw = stored.get(_START.pack(NO_WATERMARK))
    if raw is None:
        return []
    watermark = int(wt.table.value_codec.decode(raw))
    starts = [_START.unpack_from(k)[0] for k in stored if len(k) > 8]
    return [s for s in starts if 0 <= s <= watermark - hold]


@settings(max_examples=150, deadline=None)
@example(  # rows written, closed, then replayed without the purge rule: loading skips them
    events=[(10, "u", 1), (150, "u", 2), (300, "u", 1)], ooo=0, lateness=50, kind=Sliding(100),
    every=1, cut=0.67, lost=0, batches=[6], restore="standby",
)  # fmt: skip
@example(
    events=[(10, "u", 1), (150, "u", 2), (300, "u", 1)], ooo=0, lateness=50, kind=Tumbling(100),
    every=1, cut=0.67, lost=1, batches=[1], restore="standby",
)  # fmt: skip
@given(
    events=events_strategy,
    ooo=st.integers(0, 8).map(lambda t: t * 25),
    lateness=st.integers(0, 8).map(lambda t: t * 25),
    kind=st.sampled_from(
        [Tumbling(100), Tumbling(250), Hopping(200, 50), Sliding(100), Sliding(250)]
    ),
    every=st.integers(1, 9),
    cut=st.floats(0, 1),
    lost=st.integers(0, 5),
    batches=st.lists(st.integers(1, 6), min_size=1, max_size=20),
    restore=st.sampled_from(["store", "changelog", "standby"]),
)
def test_a_restart_gives_every_window_once(
    tmp_path_factory: Any,
    events: list[tuple[int, str, int]],
    ooo: int,
    lateness: int,
    kind: Any,
    every: int,
    cut: float,
    lost: int,
    batches: list[int],
    restore: str,
) -> None:
    """Checkpoints every `every` events up to the cut; `lost` more events processed and lost in
    a crash; a restart goes on from the cut, from the store file, or from a fresh store that
    replays the changelog's records in batches of the given sizes (a batch keeps each key's
    newest record), with the purge rule or, as a standby's replay, without it (closed rows
    stay stored: loading must skip them). The committed outputs match the brute-force oracle,
    each window once; no closed row of start >= 0 ever got a tombstone or stays in a store
    after a write with the rule."""
    tmp = tmp_path_factory.mktemp("p")
    wt = window_app(kind, lateness)
    k = int(cut * len(events))
    first = Run(wt, open_store(tmp / "a.sqlite", {"t": "1"}, ["w"]), ooo, None)
    changelog: list[tuple[bytes, bytes | None]] = []
    for i, event in enumerate(events[:k]):
        first.event(*event)
        if (i + 1) % every == 0 or i + 1 == k:
            changelog += first.checkpoint().items()
            assert closed_in_store(wt, first.store) == []
    committed = list(first.task.out)
    for event in events[k : k + lost]:  # processed, never committed: the crash loses them
        first.event(*event)
    first.store.close()
    assert all(v is not None for key, v in changelog if _START.unpack_from(key)[0] >= 0)

    if restore != "store":
        store = open_store(tmp / "b.sqlite", {"t": "1"}, ["w"])
        if restore == "changelog":
            store.purges = {"w": wt.table.purge}  # type: ignore[dict-item]
        at, sizes = 0, iter(batches * (1 + len(changelog)))
        while at < len(changelog):
            size = next(sizes)
            store.apply({"w": dict(changelog[at : at + size])}, {})
            assert restore == "standby" or closed_in_store(wt, store) == []
            at += size
    else:
        store = open_store(tmp / "a.sqlite", {"t": "1"}, ["w"])
    top = max((ts for ts, _, _ in events[:k]), default=None)
    second = Run(wt, store, ooo, top)
    for event in events[k:]:
        second.event(*event)
    second.part.advance(2**62)  # the end of time: every window closes
    second.checkpoint()
    assert closed_in_store(wt, second.store) == []
    times = [_START.unpack_from(k)[0] for k, _ in second.store.scan("w")]
    assert [t for t in times if t >= 0] == []  # every window closed at the end of time
    second.store.close()

    outputs = committed + second.task.out
    if isinstance(kind, Sliding):
        expected, _ = sliding_oracle(kind.size_ms, events, ooo, lateness)
        got = {(o["key"], o["end"]): o["count"] for o in outputs}
    else:
        expected, _ = oracle(kind, "sum", events, ooo, lateness)
        got = {(o["key"], o["start"]): o["sum"] for o in outputs}
    assert len(got) == len(outputs), "a window was emitted twice"
    assert got == expected


def test_a_closed_window_reads_as_none_while_its_row_is_still_stored(tmp_path: Path) -> None:
    wt = window_app(Tumbling(100), 0)
    run = Run(wt, open_store(tmp_path / "s.sqlite", {"t": "1"}, ["w"]), 0, None)
    run.event(10, "u", 5)
    run.checkpoint()  # the row of [0, 100) is stored
    run.event(150, "u", 1)  # the watermark passes 100: [0, 100) closes, its row forgotten
    assert run.part.get("u", 0) is None and run.part.get("u", 100) == 1
    assert run.store.count("w") == 2  # [0, 100) still stored: deleted with the next write
    assert [w["start"] for w in windows_of(wt, run.rows, "u")] == [100]  # a query: open ones
    changes = run.checkpoint()
    assert None not in changes.values()  # no tombstone
    assert run.part.get("u", 0) is None and run.store.count("w") == 2  # [100, 200) + wm
    assert [w["start"] for w in windows_of(wt, run.rows, "u")] == [100]


def test_after_a_restart_only_rows_that_exist_are_read_from_the_store(tmp_path: Path) -> None:
    """A restored window partition knows its open rows (`open`, loaded): a new (window, key)
    costs no SQLite read (each used to, once the store held any row: a read per event of a
    stream of new keys), a stored one is read once, and both count on."""
    wt = window_app(Tumbling(100), 0)
    run = Run(wt, open_store(tmp_path / "s.sqlite", {"t": "1"}, ["w"]), 0, None)
    run.event(10, "old", 5)
    run.checkpoint()
    again = Run(wt, run.store, 0, 10)  # a restart from the store
    reads: list[bytes] = []
    stored_get = again.store.get

    def counted(table: str, key: bytes) -> bytes | None:
        reads.append(key)
        return stored_get(table, key)

    again.store.get = counted  # type: ignore[method-assign]
    for i in range(50):
        again.event(20 + i, f"new-{i}", 1)
    assert reads == []
    assert again.part.get("new-3", 0) == 1 and again.part.get("never", 0) is None
    again.event(80, "old", 2)
    again.event(90, "old", 3)
    assert len(reads) == 1 and again.part.get("old", 0) == 10


def test_a_window_starting_before_1970_gets_a_tombstone(tmp_path: Path) -> None:
    """Negative starts sort after every other in the store's bytes: no purge range holds them,
    so their rows are deleted one by one, as before."""
    wt = window_app(Hopping(200, 50), 0)
    run = Run(wt, open_store(tmp_path / "s.sqlite", {"t": "1"}, ["w"]), 0, None)
    run.event(10, "u", 1)  # windows starting -150, -100, -50 and 0
    run.checkpoint()
    run.event(1_000, "u", 1)  # all four close
    changes = run.checkpoint()
    deleted = sorted(_START.unpack_from(k)[0] for k, v in changes.items() if v is None)
    assert deleted == [-150, -100, -50]  # and no tombstone for the one starting at 0
    stored = sorted(_START.unpack_from(k)[0] for k, _ in run.store.scan("w") if len(k) > 8)
    assert stored == [850, 900, 950, 1_000]


def test_the_purge_ranges_cover_the_closed_starts_and_nothing_else() -> None:
    wt = window_app(Tumbling(100), 50)
    purge = closed_rows(wt.table, 150)
    wm_key = wt.table.key_codec.encode(WATERMARK_ROW)

    def covered(start: int, key: bytes, watermark: int) -> bool:
        row = _START.pack(start) + key
        ranges = purge({wm_key: wt.table.value_codec.encode(watermark)})
        return any(lo <= row < hi for lo, hi in ranges)

    for watermark in (NO_WATERMARK, -500, 0, 149, 150, 151, 10_000, 2**62):
        for start in (-200, -100, 0, 1, 100, 9_800, 9_850, 9_851, 10_000, 2**62):
            for key in (b"", b"\x00", b"\xff\xff", b"user-1"):
                expected = start >= 0 and start + 150 <= watermark
                assert covered(start, key, watermark) == expected, (start, key, watermark)
        assert not covered(NO_WATERMARK, b"", watermark)  # never the watermark row
    assert purge({b"other": b"1"}) == []  # no watermark row written: nothing closed


def test_a_time_window_changelog_is_deleted_by_time_and_a_session_one_is_not() -> None:
    app = sk.App("cfg")
    tumbling = app.window("t", sk.tumbling(60), sk.count(), allowed_lateness=30)
    hopping = app.window("h", sk.hopping(60, every=20), sk.count(), changelog_extra=10)
    session = app.window("s", sk.session(30), sk.count())
    sliding = app.window("l", sk.sliding(60), sk.count(), allowed_lateness=5)
    assert sliding.table.changelog.config["retention.ms"] == str(60_000 + 5_000 + 86_400_000)
    assert sliding.table.purge is not None
    assert tumbling.table.changelog.config == {
        "cleanup.policy": "compact,delete",
        "retention.ms": str(60_000 + 30_000 + 86_400_000),
    }
    assert hopping.table.changelog.config["retention.ms"] == str(60_000 + 10_000)
    assert session.table.changelog.config == {"cleanup.policy": "compact"}
    assert session.table.purge is None
