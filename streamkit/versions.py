"""Versioned tables and time-synchronised joins: the pure logic (no I/O, no runtime).

A versioned table keeps, per key, the versions it was given: `(valid_from ms, value)`, sorted
by time, a deletion being a version whose value is `TOMBSTONE`. A version holds from its time
up to the next version's time (the latest: for ever). The semantics follow Kafka Streams'
versioned key-value stores (KIP-889):

- **Observed stream time** of a table partition: the largest version time it was given.
- **Retention** `r`: history is kept for `as_of` lookups at times `>= observed - r` (the
  cutoff). A lookup before the cutoff finds nothing (it would depend on what was purged), a
  put before the cutoff is refused (it could only change history no lookup may see).
- **Out-of-order puts** go into the history at their time: they change what `as_of` answers
  between their time and the next version's, never the later versions.
- **Same time twice**: the later put replaces the earlier one.
- **Delete** at time t: a tombstone version; `as_of(t')` for t' from t to the next version
  finds nothing.
- **Purge**: a version whose validity ended at or before the cutoff (the next version's time
  `<=` cutoff) can serve no lookup: it is purged; so is a tombstone that is the key's latest
  version and is at or before the cutoff. The latest real value is kept, however old.

The sync decision (`sync_delay`) says whether a stream record may be joined with a table read
from a topic now, as Kafka Streams' `max.task.idle.ms` does (`docs/joins.md`, joins with
tables).
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass
from typing import Any

TOMBSTONE: Any = object()  # the value of a delete version

Versions = list[tuple[int, Any]]  # (valid_from ms, value or TOMBSTONE), ascending by time

_OFFSET = 1 << 63  # signed ms → unsigned, so byte order is time order


@dataclass(frozen=True)
class Versioned:
    """`app.table("prices", versioned=sk.Versioned(retention=3600))`: keep each key's history
    for `retention` seconds of the table's observed stream time."""

    retention: float

    def __post_init__(self) -> None:
        if not self.retention > 0:
            raise ValueError(
                f"Versioned(retention={self.retention!r}): the retention is a number of "
                "seconds > 0 (how far back in event time as_of lookups may look)"
            )

    @property
    def retention_ms(self) -> int:
        return round(self.retention * 1000)


def row_key(encoded_key: bytes, ts_ms: int) -> bytes:
    """The stored (and changelog) key of one version: the encoded key, then its time as 8
    bytes big-endian, so each version is its own row and compaction keeps every version until
    a tombstone of that row purges it."""
    return encoded_key + (ts_ms + _OFFSET).to_bytes(8, "big")


def split_row_key(row: bytes) -> tuple[bytes, int]:
    """(encoded key, version time) of a row key made by `row_key`."""
    if len(row) < 8:
        raise ValueError(f"not a version row key: {row!r}")
    return row[:-8], int.from_bytes(row[-8:], "big") - _OFFSET


def cutoff(observed: int | None, retention_ms: int) -> int | None:
    """The oldest time an `as_of` may ask about (None: the table has seen nothing yet)."""
    return None if observed is None else observed - retention_ms


def version_at(versions: Versions, t: int) -> tuple[bool, Any]:
    """(found, value): the version that held at time t (the last with valid_from <= t)."""
    i = bisect.bisect_right(versions, t, key=lambda v: v[0])
    if i == 0:
        return False, None
    value = versions[i - 1][1]
    if value is TOMBSTONE:
        return False, None
    return True, value


def as_of(versions: Versions, t: int, oldest: int | None) -> tuple[bool, Any]:
    """`version_at`, but nothing before the retention's cutoff `oldest`."""
    if oldest is not None and t < oldest:
        return False, None
    return version_at(versions, t)


def put(versions: Versions, ts: int, value: Any, oldest: int | None) -> bool:
    """Insert the version (ts, value) in place; False (and nothing changed) when ts is
    before the cutoff `oldest`. A version at the same time is replaced."""
    if oldest is not None and ts < oldest:
        return False
    i = bisect.bisect_left(versions, ts, key=lambda v: v[0])
    if i < len(versions) and versions[i][0] == ts:
        versions[i] = (ts, value)
    else:
        versions.insert(i, (ts, value))
    return True


def expired(versions: Versions, oldest: int | None) -> list[int]:
    """Times of the versions no lookup at or after `oldest` can see (see the module doc)."""
    if oldest is None or not versions:
        return []
    gone = []
    for (ts, _), (nxt, _) in itertools.pairwise(versions):
        if nxt <= oldest:
            gone.append(ts)
        else:
            break
    last_ts, last = versions[-1]
    if last is TOMBSTONE and last_ts <= oldest and len(gone) == len(versions) - 1:
        gone.append(last_ts)
    return gone


def purge(versions: Versions, oldest: int | None) -> list[int]:
    """Remove the expired versions in place; their times (for tombstones of their rows)."""
    gone = expired(versions, oldest)
    if gone:
        del versions[: len(gone)]
    return gone


def sync_delay(
    record_ts: int,
    arrived: float,
    now: float,
    table_time: int | None,
    caught_up_at: float | None,
    max_wait: float,
    progressed_at: float | None = None,
) -> float:
    """Seconds to hold a stream record back before joining it with a table read from a topic
    (0: join now). The table partition is followed in the background; the record may join
    once one of these holds:

    1. the table has been read up to the record's time (`table_time`, the newest record
       time read from the table's topic, is at or after `record_ts`);
    2. the table was read to its end by a fetch that started after the record arrived
       (`caught_up_at >= arrived`): every table row written before the record was, is read;
    3. `max_wait` seconds have passed since the record arrived and since the table last
       read new rows (`progressed_at`): while the table is catching up the record waits, a
       table whose topic does not answer delays it by `max_wait` at most.
    """
    if synced(record_ts, arrived, table_time, caught_up_at):
        return 0.0
    since = arrived if progressed_at is None else max(arrived, progressed_at)
    left = since + max_wait - now
    return left if left > 0 else 0.0


def synced(
    record_ts: int, arrived: float, table_time: int | None, caught_up_at: float | None
) -> bool:
    """Conditions 1 or 2 of `sync_delay`: the table has caught up with the record."""
    return (table_time is not None and table_time >= record_ts) or (
        caught_up_at is not None and caught_up_at >= arrived
    )
