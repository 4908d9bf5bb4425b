"""A corrupt store file is set aside and replaced by an empty one whatever Python's sqlite3
raises for it. Garbage over a store's pages can make the text of SQLite's error quote bytes
that are not UTF-8 (a table name read from the corrupt schema), which sqlite3 raises as
UnicodeDecodeError, not DatabaseError: the chaos test that corrupts a killed worker's files
saw the restarted worker stop on it (`worker failing: UnicodeDecodeError`)."""

from __future__ import annotations

import contextlib
import random
import sqlite3
from pathlib import Path

from streamkit.state.store import PartitionStore, open_store

IDENTITY = {"app": "corrupt"}


def undecodable_corruption(tmp_path: Path) -> Path:
    """A store whose garbage makes plain sqlite3 raise UnicodeDecodeError on opening it (the
    first such seed: found by trying, so a new layout or SQLite version still finds one)."""
    good = tmp_path / "good.sqlite"
    PartitionStore(good, IDENTITY, ["totals"]).close()
    data = good.read_bytes()
    for seed in range(20_000):
        garbage = bytearray(data)
        garbage[1024:] = random.Random(seed).randbytes(len(data) - 1024)
        path = tmp_path / f"store-{seed}.sqlite"
        path.write_bytes(bytes(garbage))
        try:
            with contextlib.closing(sqlite3.connect(path)) as db:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA quick_check").fetchall()
        except UnicodeDecodeError:
            return path
        except sqlite3.DatabaseError:
            pass
        for suffix in ("", "-wal", "-shm"):
            path.with_name(path.name + suffix).unlink(missing_ok=True)
    raise AssertionError("no garbage made sqlite3 raise UnicodeDecodeError")


def test_a_store_whose_corruption_sqlite_reports_in_undecodable_bytes_is_set_aside(
    tmp_path: Path,
) -> None:
    path = undecodable_corruption(tmp_path)
    store = open_store(path, IDENTITY, ["totals"])
    try:
        assert list(path.parent.glob(path.name + ".bad-*")), "the corrupt file is not set aside"
        assert store.offsets() == {}  # a fresh store: the changelog rebuilds it
    finally:
        store.close()
