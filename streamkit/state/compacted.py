"""CompactedReader: the one reader of compacted topics.

Four things read a compacted topic into a local copy: a task's restore (`changelog.py`),
standbys (`standby.py`), global tables (`global_table.py`) and tables read from a topic
(`source_tables.py`). They all read through this class: raw read_committed fetches of a set
of partitions (`RawClient` in `streamkit.aiokafka_internals`: keys and values only, control
batches and aborted transactions skipped), each from the offset after the one its copy
reflects, batch by batch; the caller applies each batch with the offset reached.

A copy's offset may have vanished from its topic:

- retention deleted it (`cleanup.policy=compact,delete`, `DeleteRecords`): the stored
  position is before the log start, the fetch answers OffsetOutOfRange;
- the topic was deleted and created again (`streamkit reset`, an operator): the stored
  position is past the new end, or the topic id the copy recorded is not the topic's id
  any more (the new log may have grown past the old offset: only the id tells).

The end checked is the high watermark, not the last stable offset: a transaction's commit
returns before its markers are written, so a store written just after a commit may reflect
an offset past the last stable offset for a moment, and that is no vanished offset.

Detected at `start` (the copy's offset against the log start and end, the topic id it
recorded against the topic's) and while following (a fetch answered with OffsetOutOfRange;
the followed topics' ids, every `ID_CHECK` seconds).

Every reader handles it the same way: a warning names the partition, the stored offset, the
log start and end (and both topic ids); the caller's `wipe(tp, log_start)` forgets the
copy's rows of that partition and the offset they reflect; the partition is read again from
the log start. The copy then holds the topic's rows, never a mix of two logs. The topic ids a
copy reflects are returned by `start` for the caller to record with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from aiokafka.structs import TopicPartition

from streamkit.aiokafka_internals import EARLIEST, LATEST, Fetched
from streamkit.clients import make_raw_client
from streamkit.settings import Settings

log = logging.getLogger(__name__)

ID_CHECK = 30.0  # seconds between two checks of the followed topics' ids

# forget the copy's rows of a partition (and its stored offset); the int is the log start
Wipe = Callable[[TopicPartition, int], Awaitable[None]]

__all__ = ["CompactedReader", "Fetched", "Wipe"]


class CompactedReader:
    """Reads a set of partitions of compacted topics; `positions` is the next offset of each.

    One per user (restore, standbys, global tables, source tables), each with its own
    connections; `start` positions partitions after their copies' offsets, `fetch` reads
    once from every position and moves them on; callers may drop partitions from
    `positions` (done, or no longer followed)."""

    def __init__(self, settings: Settings, client_id: str, what: str) -> None:
        self._client = make_raw_client(settings, client_id)
        self._what = what  # for the logs: "restore", "standby", "global table", ...
        self.positions: dict[TopicPartition, int] = {}
        self.timed: set[TopicPartition] = set()  # partitions whose rows' timestamps are kept
        self._ids: dict[str, str] = {}  # the id of each topic read, as last seen
        self._ids_checked = time.monotonic()

    async def connect(self) -> None:
        """Bootstrap the client now (else on its first request)."""
        await self._client.start()

    async def close(self) -> None:
        await self._client.close()

    async def ends(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The last stable offset of each partition (read_committed: where its end is)."""
        return await self._client.list_offsets(tps, LATEST) if tps else {}

    async def partitions(self, topic: str) -> int:
        return await self._client.partitions(topic)

    async def start(
        self,
        stored: Mapping[TopicPartition, int | None],
        wipe: Wipe,
        known_ids: Mapping[TopicPartition, str] | None = None,
    ) -> dict[str, str]:
        """Position each partition after the offset its copy reflects (`stored`, None: no
        offset yet: from the log start), checked against the log's bounds and, where the copy
        recorded one, the topic id; a vanished offset is wiped (see the module docstring).
        Returns the topics' current ids (hex), for the caller to record with its copies."""
        if not stored:
            return {}
        tps = list(stored)
        await self._client.start()  # one bootstrap, before the requests go out together
        ids, starts, ends = await asyncio.gather(
            self._client.topic_ids(sorted({tp.topic for tp in tps})),
            self._client.list_offsets(tps, EARLIEST),
            self._client.list_offsets(tps, LATEST, committed=False),
        )
        for tp, offset in stored.items():
            if offset is None:
                self.positions[tp] = starts[tp]
                continue
            position = offset + 1
            known, now = (known_ids or {}).get(tp), ids.get(tp.topic)
            if known is not None and now is not None and known != now:
                why = f"the topic was created again (id {known}, now {now})"
                await self._vanished(tp, position, starts[tp], ends[tp], why, wipe)
            elif not starts[tp] <= position <= ends[tp]:
                await self._vanished(
                    tp, position, starts[tp], ends[tp], _why(position, starts[tp]), wipe
                )
            else:
                self.positions[tp] = position
        current = {topic: topic_id for topic, topic_id in ids.items() if topic_id is not None}
        self._ids.update(current)
        return current

    async def fetch(self, wipe: Wipe) -> dict[TopicPartition, Fetched]:
        """One fetch from every position (a 50 ms long poll); positions move on. A partition
        whose position vanished meanwhile is wiped and left out; it reads from its log start
        at the next fetch."""
        if not self.positions:
            return {}
        if time.monotonic() - self._ids_checked > ID_CHECK:
            await self._check_ids(wipe)
        fetched = await self._client.fetch(dict(self.positions), self.timed)
        if len(fetched) < len(self.positions):
            await asyncio.sleep(0.1)  # a partition without a leader now: not in a tight loop
        lost = [tp for tp, got in fetched.items() if got.out_of_range]
        if lost:
            starts = await self._client.list_offsets(lost, EARLIEST)
            ends = await self._client.list_offsets(lost, LATEST, committed=False)
            for tp in lost:
                del fetched[tp]
                position = self.positions.get(tp)
                if position is None:
                    continue  # dropped meanwhile
                if starts[tp] <= position <= ends[tp]:
                    continue  # the leader moved and came back: ask again
                await self._vanished(
                    tp, position, starts[tp], ends[tp], _why(position, starts[tp]), wipe
                )
        for tp, got in fetched.items():
            if tp in self.positions:
                self.positions[tp] = got.next_offset
        return fetched

    async def _check_ids(self, wipe: Wipe) -> None:
        """A followed topic created again whose new log already reached the position gives
        no OffsetOutOfRange: its id tells (checked every `ID_CHECK` seconds)."""
        self._ids_checked = time.monotonic()
        topics = sorted({tp.topic for tp in self.positions})
        ids = await self._client.topic_ids(topics)
        changed = {
            t: (self._ids[t], i)
            for t, i in ids.items()
            if i is not None and t in self._ids and self._ids[t] != i
        }
        self._ids.update({t: i for t, i in ids.items() if i is not None})
        if not changed:
            return
        tps = [tp for tp in self.positions if tp.topic in changed]
        starts = await self._client.list_offsets(tps, EARLIEST)
        ends = await self._client.list_offsets(tps, LATEST, committed=False)
        for tp in tps:
            why = "the topic was created again (id {}, now {})".format(*changed[tp.topic])
            await self._vanished(tp, self.positions[tp], starts[tp], ends[tp], why, wipe)

    async def _vanished(
        self, tp: TopicPartition, position: int, start: int, end: int, why: str, wipe: Wipe
    ) -> None:
        log.warning(
            "%s: %s[%d]: offset %d is gone (log start %d, end %d: %s); the local rows of that "
            "partition are dropped and read again from offset %d",
            self._what,
            tp.topic,
            tp.partition,
            position - 1,
            start,
            end,
            why,
            start,
        )
        await wipe(tp, start)
        self.positions[tp] = start


def _why(position: int, start: int) -> str:
    if position < start:
        return "deleted by retention"
    return "past the end: the topic was created again"
