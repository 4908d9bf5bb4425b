"""Filling the producer's batches with aiokafka's C record builder directly.

aiokafka's `BatchBuilder.append` (producer/message_accumulator.py) is a Python wrapper around
its C `DefaultRecordBatchBuilder.append`: a closed check, a `_serialize` call (streamkit's
producers have no serializers: records come encoded) and a keyword call, ~400 ns a record
where the C call alone takes ~180 (docs/benchmarks.md). An `OpenBatch` calls the C builder
positionally and counts the records itself; `closed()` writes the count where aiokafka reads
it (`record_count()`, the wrapper's relative offset) before the batch goes to `send_batch`.

A batch of any other producer (the testing kit's, a test's fake) is filled through its own
keyword `append`, so the collector has one path for both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiokafka.producer.message_accumulator import BatchBuilder

from streamkit.aiokafka_internals.groups import _require

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
