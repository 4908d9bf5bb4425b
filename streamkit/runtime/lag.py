"""Lag that counts records, not offsets.

`end - committed` counts offsets. On a transactional topic (a repartition topic, a sink under
exactly-once) each transaction leaves a commit marker that takes an offset but is no record,
and aborted records take offsets too: a drained partition shows a lag of 1 (the marker).
`exact_lags` reads what lies between the committed offset and the last stable offset with a
read_committed consumer (no group) and counts the records a consumer would get. It does so for
partitions whose offset gap is at most EXACT_UP_TO; a larger gap is reported as it is (an
upper bound that overstates by the markers in it, a fraction of a percent at any real lag).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Protocol

from aiokafka.structs import TopicPartition

from streamkit.clients import make_consumer
from streamkit.settings import Settings

EXACT_UP_TO = 1000
READ_TIMEOUT = 10.0


class Gap(Protocol):
    topic: str
    partition: int
    committed: int | None
    end: int


async def exact_lags(
    settings: Settings, client_id: str, rows: Iterable[Gap]
) -> dict[tuple[str, int], int]:
    """(topic, partition) → records between the committed offset and the end, for the rows
    whose gap is 1..EXACT_UP_TO offsets; the others are left out (use end - committed)."""
    spans = {
        TopicPartition(r.topic, r.partition): (r.committed, r.end)
        for r in rows
        if r.committed is not None and 0 < r.end - r.committed <= EXACT_UP_TO
    }
    if not spans:
        return {}
    consumer = make_consumer(settings, None, client_id)
    await consumer.start()
    try:
        return await _count(consumer, spans)
    finally:
        await consumer.stop()


async def _count(
    consumer: Any, spans: dict[TopicPartition, tuple[int, int]]
) -> dict[tuple[str, int], int]:
    consumer.assign(sorted(spans))
    for tp, (start, _) in spans.items():
        consumer.seek(tp, start)
    counts = {tp: 0 for tp in spans}
    open_ = set(spans)
    deadline = time.monotonic() + READ_TIMEOUT
    while open_ and time.monotonic() < deadline:
        batch = await consumer.getmany(*open_, timeout_ms=200)
        for tp, records in batch.items():
            counts[tp] += sum(1 for r in records if r.offset < spans[tp][1])
        for tp in list(open_):
            if await consumer.position(tp) >= spans[tp][1]:
                open_.discard(tp)
    # a partition not read to its end in time keeps its offset gap
    return {(tp.topic, tp.partition): counts[tp] for tp in spans if tp not in open_}
