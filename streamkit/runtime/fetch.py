"""The fetch loop: records of the input partitions whose tasks have room, handed to their tasks.

Two paths, `Settings.fetch_path`; both leave the group membership, the assignment and the
offset commits to aiokafka's consumer:

- `RawFetch` (`raw`, the default): streamkit's own read_committed Fetch requests
  (`aiokafka_internals.RawClient.fetch_input`), records read in one pass in C into light
  `InputRecord`s (`aiokafka_internals/_records.c`; aiokafka's reader for compressed batches).
  The consumer fetches none of these partitions: each is paused on it as it is assigned, and
  the consumer is polled (its `max_poll_interval_ms` counts the time between polls) for a
  partition it never holds, so it hands out no record and its positions stay where the
  assignment put them.

  1. At assignment, a partition's position is the consumer's (`position()`): the committed
     offset, the reset policy's where there is none, or the exactly-once seek.
  2. One Fetch per leader at a time, for every partition of it that has no response
     waiting, in the leader's incremental fetch session (KIP-227: the request lists the
     partitions that are new or moved, the response those with something new). The broker
     holds it up to `MAX_WAIT_MS` for `MIN_BYTES`, so that a quiet topic is not asked again
     and again; `SHORT_WAIT_MS` while partitions of that leader wait for room (they are to be
     asked again soon).
  3. A response advances the position (past control batches and aborted transactions too) and
     waits beside the partition's task; its records are read and handed over as the task has
     room (up to `max_buffered_per_partition` buffered), and once the last is handed the
     partition is fetched again. So the next response is on its way while the task processes
     this one (pipelined, as aiokafka's fetcher prefetches), and backpressure is: a partition
     whose task is full and whose next response is waiting is left out of the fetch.
  4. Each handed response tells the task's event clock whether the partition is read to its
     end (the response's last stable offset).
  5. Errors as the consumer: out of range -> the consumer's reset policy (`seek_to_beginning`
     or `seek_to_end`, then its position); a moved leader or an unreachable broker -> the
     metadata is refreshed and the partition asked again after `RETRY_BACKOFF`; any other
     error fails the worker.
  6. A partition whose task changed (revoked, perhaps assigned again: a new task) is
     forgotten, its response in flight dropped when it comes; a dispatch refused (the task
     restoring) rewinds it.

- `consumer_fetch` (`consumer`, the reference): batched `getmany` for the partitions whose
  tasks have room (a full one is left out of the next `getmany`), then dispatch.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiokafka.errors import IllegalStateError
from aiokafka.structs import TopicPartition

from streamkit.aiokafka_internals import FetchSession, InputFetched, RawClient, input_records
from streamkit.runtime.task import Task
from streamkit.runtime.task_manager import TaskManager
from streamkit.settings import Settings

FETCH_TIMEOUT_MS = 100
ROOM_WAIT = 0.5
MAX_WAIT_MS = 500  # the broker holds a fetch this long for MIN_BYTES (aiokafka's default)
SHORT_WAIT_MS = 10  # ... when partitions of that broker wait for room: they are asked soon
MIN_BYTES = 1
PARTITION_BYTES = 4 * 1024 * 1024  # as the consumer's max_partition_fetch_bytes
RESPONSE_BYTES = 32 * 1024 * 1024  # as the consumer's fetch_max_bytes
RETRY_BACKOFF = 0.1
POLL_MS = 1000
NO_PARTITION = TopicPartition("", -1)  # what the consumer is polled for: never assigned
_Asked = tuple[Task, int]  # a partition in a fetch: for which task, from which offset


class _Partition:
    """An input partition as the raw fetch sees it (for one task: a new task, a new one)."""

    __slots__ = ("end", "handed", "held", "in_flight", "offset", "retry_at", "task")

    def __init__(self, task: Task, offset: int) -> None:
        self.task = task
        self.offset = offset  # where the next fetch starts
        self.handed = offset  # the offset after what the task was handed
        self.end = -1  # the last stable offset of the last response
        self.held: InputFetched | None = None  # a response waiting for room in the task
        self.in_flight = False
        self.retry_at = 0.0


class RawFetch:
    """The raw fetch path of one worker (steps in the module docstring)."""

    def __init__(
        self, consumer: Any, tasks: TaskManager, settings: Settings, client: RawClient
    ) -> None:
        self._consumer = consumer
        self._tasks = tasks
        self._client = client
        self._limit = settings.max_buffered_per_partition
        self._reset_to_end = settings.auto_offset_reset == "latest"
        self._parts: dict[TopicPartition, _Partition] = {}
        # the fetches in flight: their node and what they asked (by task, at which offset)
        self._in_flight: dict[asyncio.Task[Any], tuple[int, dict[TopicPartition, _Asked]]] = {}
        self._sessions: dict[int, FetchSession] = {}  # by node
        self._resolving: asyncio.Task[None] | None = None
        self._to_reset: set[TopicPartition] = set()  # out of range: the reset policy's

    def assigned(self) -> None:
        """Pause every assigned partition on the consumer (call it as partitions are assigned,
        before anything awaits): its fetcher leaves them to us."""
        consumer = self._consumer
        fresh = consumer.assignment() - consumer.paused()
        if fresh:
            consumer.pause(*fresh)

    def progress(self, tp: TopicPartition) -> tuple[int, int] | None:
        """(the offset after what the partition's task was handed, the partition's last stable
        offset), or None while unknown."""
        part = self._parts.get(tp)
        if part is None or part.end < 0:
            return None
        return part.handed, part.end

    async def close(self) -> None:
        await self._client.close()

    async def run(self) -> None:
        keeper = asyncio.create_task(self._keep_polling(), name="streamkit-fetch-poll")
        room: asyncio.Task[Any] | None = None
        try:
            while True:
                if room is None or room.done():
                    self._tasks.room.clear()
                    room = asyncio.create_task(self._tasks.room.wait())
                backoff = await self._round()
                waiting: set[asyncio.Task[Any]] = {keeper, room, *self._in_flight}
                if self._resolving is not None:
                    waiting.add(self._resolving)
                done, _ = await asyncio.wait(
                    waiting,
                    timeout=RETRY_BACKOFF if backoff else ROOM_WAIT,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if keeper in done:
                    keeper.result()  # the consumer failed (raises)
                for fetch in done:
                    asked = self._in_flight.pop(fetch, None)
                    if asked is not None:
                        self._received(asked[1], fetch.result())
                if self._resolving is not None and self._resolving.done():
                    resolving, self._resolving = self._resolving, None
                    resolving.result()
        finally:
            pending = [keeper, *self._in_flight]
            if room is not None:
                pending.append(room)
            if self._resolving is not None:
                pending.append(self._resolving)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            self._in_flight.clear()

    async def _keep_polling(self) -> None:
        """Poll the consumer (the group takes a member that does not poll for idle), for a
        partition it never holds: it hands out nothing and its positions do not move."""
        while True:
            self.assigned()
            await self._consumer.getmany(NO_PARTITION, timeout_ms=POLL_MS)

    async def _round(self) -> bool:
        """Forget what changed hands, hand over waiting responses where there is room, start
        the fetches. True when some partition waits to be asked again (after an error)."""
        by_input = self._tasks.by_input
        parts = self._parts
        for tp in [tp for tp, part in parts.items() if by_input.get(tp) is not part.task]:
            del parts[tp]  # (6)
        fresh = [tp for tp in by_input if tp not in parts]
        if fresh and self._resolving is None:
            self._resolving = asyncio.create_task(self._resolve(fresh))
        now = asyncio.get_running_loop().time()
        wanted, waiting, backoff = [], [], False
        for tp, part in parts.items():
            if not part.task.accepting or part.in_flight:
                continue
            if part.held is not None:
                self._hand(tp, part)
                if part.held is not None:
                    waiting.append(tp)
                    continue
            if part.retry_at > now:
                backoff = True
            else:
                wanted.append(tp)
        if wanted:
            busy = {node for node, _ in self._in_flight.values()}
            leaders = await self._client.leaders(wanted + waiting)
            for node, group in leaders.items():
                if node in busy:
                    continue
                ask = [tp for tp in group if tp in parts and not parts[tp].held]
                if ask:  # (2) the others, full, would hold a quiet fetch back: a short one
                    self._send(node, ask, SHORT_WAIT_MS if len(ask) < len(group) else MAX_WAIT_MS)
            asked = {tp for _, sent in self._in_flight.values() for tp in sent}
            backoff = backoff or any(tp not in asked for tp in wanted)
        return backoff

    def _send(self, node: int, tps: list[TopicPartition], max_wait_ms: int) -> None:
        """(2) One fetch to `node`, in its session, for every partition wanted from it now."""
        parts = self._parts
        sent = {}
        for tp in tps:
            part = parts[tp]
            part.in_flight = True
            sent[tp] = (part.task, part.offset)
        session = self._sessions.setdefault(node, FetchSession())
        positions = {tp: offset for tp, (_, offset) in sent.items()}
        request = self._client.fetch_input(
            node, session, positions, max_wait_ms, MIN_BYTES, PARTITION_BYTES, RESPONSE_BYTES
        )
        self._in_flight[asyncio.create_task(request)] = (node, sent)

    def _received(
        self,
        sent: dict[TopicPartition, _Asked],
        answer: dict[TopicPartition, InputFetched] | None,
    ) -> None:
        parts = self._parts
        retry_at = asyncio.get_running_loop().time() + RETRY_BACKOFF
        for tp, (task, offset) in sent.items():
            part = parts.get(tp)
            if part is None or part.task is not task:
                continue  # (6) no longer ours
            part.in_flight = False
            if part.offset != offset:
                continue  # moved meanwhile: this answer is for a position it left
            if answer is None:  # (5) unreachable, or the session refused: a new one
                part.retry_at = retry_at
                continue
            got = answer.get(tp)
            if got is None:  # nothing new
                continue
            if got.retry:  # (5) a moved leader
                part.retry_at = retry_at
            elif got.out_of_range:  # (5) the reset policy, on the consumer
                del parts[tp]
                self._to_reset.add(tp)
            else:  # (3)
                part.offset = got.next_offset
                part.end = got.last_stable
                part.held = got
                self._hand(tp, part)

    def _hand(self, tp: TopicPartition, part: _Partition) -> None:
        """(3) Read the waiting response's records, as many as the task has room for, and
        hand them over; the response is done once its last batch is."""
        got = part.held
        assert got is not None
        room = self._limit - part.task.buffered
        if room <= 0:
            return
        records = input_records(tp.topic, tp.partition, got.batches, got.start, room)
        if not got.batches:
            part.held = None
        if records:
            rewind = self._tasks.dispatch({tp: records})
            if rewind:  # (6) the task takes nothing yet: fetch it again from there
                part.held = None
                part.offset = part.handed = rewind[tp]
                return
            part.handed = records[-1].offset + 1
        if part.held is None:  # past the control batches at its end too
            part.handed = max(part.handed, got.next_offset)
        self._note_end(tp, part)

    @staticmethod
    def _note_end(tp: TopicPartition, part: _Partition) -> None:
        """(4) For the tasks that keep event time: whether the partition is read to its end. A
        partition whose fetch lags (a starved process, a slow broker) is then never taken for
        an idle one: its watermark is not left out while its records are on their way."""
        clock = part.task.clock
        if clock is not None:
            clock.note_end(tp.topic, part.handed >= part.end)

    async def _resolve(self, tps: list[TopicPartition]) -> None:
        """(1) The positions of newly assigned partitions, from the consumer; (5) those that
        were out of range are first moved by its reset policy."""
        consumer = self._consumer
        self.assigned()
        tasks = {tp: self._tasks.by_input.get(tp) for tp in tps}
        reset = [tp for tp in tps if tp in self._to_reset]
        self._to_reset.difference_update(reset)
        for tp in reset:
            with contextlib.suppress(IllegalStateError):  # revoked meanwhile
                if self._reset_to_end:
                    await consumer.seek_to_end(tp)
                else:
                    await consumer.seek_to_beginning(tp)
        found = await asyncio.gather(*(consumer.position(tp) for tp in tps), return_exceptions=True)
        by_input = self._tasks.by_input
        for tp, offset in zip(tps, found, strict=True):
            if isinstance(offset, IllegalStateError):
                continue  # no longer assigned
            if isinstance(offset, BaseException):
                raise offset
            task = tasks[tp]
            if task is not None and by_input.get(tp) is task and tp not in self._parts:
                self._parts[tp] = _Partition(task, offset)
        self._tasks.room.set()  # a round now: fetch them


async def consumer_fetch(consumer: Any, tasks: TaskManager, settings: Settings) -> None:
    """The consumer's fetch path (`fetch_path="consumer"`)."""
    limit = settings.max_buffered_per_partition
    max_records = settings.max_poll_records
    while True:
        if not tasks.tasks:
            # Nothing assigned (yet): keep polling so the group sees us alive.
            batches = await consumer.getmany(timeout_ms=FETCH_TIMEOUT_MS, max_records=max_records)
            _rewind(consumer, tasks.dispatch(batches))
            continue
        ready = tasks.partitions_with_room(limit)
        if not ready:
            tasks.room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tasks.room.wait(), ROOM_WAIT)
            continue
        batches = await consumer.getmany(
            *ready, timeout_ms=FETCH_TIMEOUT_MS, max_records=max_records
        )
        _rewind(consumer, tasks.dispatch(batches))
        await _note_ends(consumer, tasks, ready)


async def consumer_progress(
    consumer: Any, tp: TopicPartition, within: float
) -> tuple[int, int] | None:
    """`RawFetch.progress` on the consumer's fetch path: its position and last stable offset
    (its high watermark where it has none)."""
    end = consumer.last_stable_offset(tp)
    if end is None or end < 0:
        end = consumer.highwater(tp)
    if end is None:
        return None  # nothing fetched yet: unknown
    try:
        position = await asyncio.wait_for(consumer.position(tp), within)
    except Exception:  # revoked meanwhile, or slow to say: unknown
        return None
    return int(position), int(end)


async def _note_ends(consumer: Any, tasks: TaskManager, tps: list[TopicPartition]) -> None:
    """For the tasks that keep event time: whether each fetched partition is read to its end
    (the position reached the last stable offset of the last fetch response)."""
    by_input = tasks.by_input
    for tp in tps:
        task = by_input.get(tp)
        clock = None if task is None else task.clock
        if clock is None:
            continue
        end = consumer.last_stable_offset(tp)
        try:
            position = await consumer.position(tp)
        except IllegalStateError:  # revoked meanwhile
            continue
        clock.note_end(tp.topic, end is not None and position >= end)


def _rewind(consumer: Any, positions: dict[TopicPartition, int]) -> None:
    for tp, offset in positions.items():
        with contextlib.suppress(IllegalStateError):  # no longer assigned: nothing to keep
            consumer.seek(tp, offset)
