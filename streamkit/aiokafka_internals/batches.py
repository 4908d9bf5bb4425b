"""Filling the producer's batches with aiokafka's C record builder directly.

aiokafka's `BatchBuilder.append` (producer/message_accumulator.py) is a Python wrapper around
its C `DefaultRecordBatchBuilder.append`: a closed check, a `_serialize` call (streamkit's
producers have no serializers: records come encoded) and a keyword call, ~400 ns a record
where the C call alone takes ~180 (docs/benchmarks.md). An `OpenBatch` calls the C builder
positionally and counts the records itself; `closed()` writes the count where aiokafka reads
it (`record_count()`, the wrapper's relative offset) before the batch goes to `send_batch`.

A batch of any other producer (the testing kit's, a test's fake) is filled through its own
keyword `append`, so the collector has one path for both.

The collector's two per-record calls: `adder(open, slow)` is its `add(tp, key, value, headers,
timestamp_ms)` (append to a known partition's open batch), `router(add, tps, known, place,
keyless)` the function that sends a record to its key's partition. Both are done in C
(`_batches.c`) for the common case (the batch is open and has room; the key's partition is
known) and fall back to the Python code they are given; with STREAMKIT_PURE_PYTHON=1 (or no
compiler where streamkit was installed) they are that Python code: the reference, which the
tests compare the native path with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder

from streamkit.aiokafka_internals.groups import _require
from streamkit.aiokafka_internals.records import NATIVE

try:
    import streamkit.aiokafka_internals._batches as _batches
    from streamkit.aiokafka_internals._records import slot_offsets

    BUILT = True
except ImportError:  # pragma: no cover (no C compiler where it was installed)
    BUILT = False
NATIVE_BATCHES = BUILT and NATIVE  # STREAMKIT_PURE_PYTHON=1 turns both off

# what an aiokafka BatchBuilder must still have for the direct path
BATCH_ATTRIBUTES = ("_builder", "_relative_offset", "_closed")


class OpenBatch:
    """One destination partition's batch being filled: `append(count, timestamp_ms, key,
    value, headers)` adds a record (None: the batch is full, the record not added); the
    caller adds 1 to `count` for each record added."""

    __slots__ = ("append", "batch", "count")

    def __init__(self, batch: Any) -> None:
        self.batch = batch
        self.count = 0
        self.append: Callable[..., Any]
        if type(batch) is BatchBuilder:
            _require(batch, BATCH_ATTRIBUTES, "BatchBuilder")
            self.append = batch._builder.append  # (offset, timestamp, key, value, headers)
        else:
            self.append = _keyword_append(batch)

    def closed(self) -> Any:
        """The batch, with its record count, for `send_batch` (nothing is added after)."""
        batch = self.batch
        if type(batch) is BatchBuilder:
            batch._relative_offset = self.count
            batch._closed = True  # as aiokafka's own append marks a batch it found full
        return batch


def _keyword_append(batch: Any) -> Callable[..., Any]:
    add = batch.append

    def append(
        offset: int, timestamp: int | None, key: bytes | None, value: bytes | None, headers: Any
    ) -> Any:
        return add(timestamp=timestamp, key=key, value=value, headers=headers) or None

    return append


# the collector's add: (tp, key, value, headers, timestamp_ms) -> a batch filled up
Add = Callable[[tuple[str, int], bytes | None, bytes | None, Any, int | None], bool]
# a record to its key's partition: (key, value, timestamp_ms, headers) -> a batch filled up
Route = Callable[..., bool]


def adder(open_batches: dict[tuple[str, int], OpenBatch], slow: Add) -> Add:
    """The collector's `add`: `slow` (its Python code), with the common case in C when built.
    `open_batches` must stay the collector's one dict of open batches (cleared, never
    replaced): the C side holds it."""
    if NATIVE_BATCHES:
        add: Add = _batches.Adder(open_batches, slow, OpenBatch, _SLOTS)
        return add
    return slow


def router(
    add: Add,
    tps: list[tuple[str, int]],
    known: dict[bytes, int],
    place: Callable[[bytes], int],
    keyless: Callable[[bytes | None, int | None, Any], bool],
) -> Route:
    """`route(key, value, timestamp_ms, headers=None)`: `add` to `tps[known[key]]` (`place(key)`
    computes and remembers a key's index when `known` misses it); a None key is `keyless(value,
    timestamp_ms, headers)`. In C when `add` is the native adder."""
    if NATIVE_BATCHES and type(add) is _batches.Adder:
        route: Route = _batches.Router(add, tps, known, place, keyless)
        return route

    def route_(
        key: bytes | None, value: bytes | None, timestamp_ms: int | None, headers: Any = None
    ) -> bool:
        if key is None:
            return keyless(value, timestamp_ms, headers)
        index = known.get(key)
        if index is None:
            index = place(key)
        return add(tps[index], key, value, headers, timestamp_ms)

    return route_


_SLOTS = slot_offsets(OpenBatch, ("append", "count")) if NATIVE_BATCHES else ()
