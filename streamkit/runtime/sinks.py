"""A task's sinks beyond Kafka (`stream.to(sk.PostgresSink(...))`): buffered rows, batches
written with the task's input offsets, retries, dead letters of refused rows.

How a sink stage runs, per task (the numbered steps of docs/architecture.md, "Sinks"):

1. **Open**, before the task takes a record: each sink's writer connects and reads the
   offsets stored with its rows (exactly-once mode). A record before its partition's stored
   offset has its rows in the destination already: the sink skips it (the task's other
   branches do not).
2. **Append**: each value that reaches the sink becomes a row (`Sink.row`; a value that is
   no row raises, and the record goes to the dead-letter topic like any error of the stage)
   kept in memory with its source record. A row is *finished* once its record is before
   the task's committable offset of that input (`done_offsets`): at the end of the
   record's pass, or, with `map_async`, once the record and every record before it have
   finished their calls (rows of later records may arrive first: they wait).
3. **Flush** the finished rows with the offset after the last finished record of each input
   partition, in one transaction of the destination (`Writer.write`): when `batch_rows` rows
   or `batch_seconds` are pending, in the task itself (it takes no record meanwhile: the
   fetch loop stops fetching its partitions once their buffer is full), and at every
   checkpoint **before** the checkpoint commits the same offsets to Kafka. The destination
   may thus be ahead of Kafka (a replay skips those rows, step 1), never behind. It moves a
   stored offset only from the value this task read or wrote last: a zombie (a worker whose
   partition was taken over) has its batch refused, nothing written (`SinkFenced`: the
   worker stops).
4. **Refused rows** (the destination's own error, e.g. a constraint) are left out of the
   batch; the same transaction keeps them in `streamkit_sink_refused` (their record's
   coordinates, the error, the row), and after it they go to the dead-letter topic with
   that error and their record's coordinates (joining the task's next Kafka commit).
5. **Unavailable** (connection lost, server restarting, file locked): drop the connection,
   wait (backoff from 0.05 s doubling to 5 s), reconnect and re-read the stored offsets; if
   they show the batch committed (its COMMIT's answer was lost), it is done, else it is
   written again. The task waits meanwhile (backpressure); after `sink_retry_timeout`
   seconds the error stops the worker, and what was not committed is redone by the
   partition's next owner.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from streamkit.context import WALL_CLOCK
from streamkit.graph import Stage
from streamkit.runtime.collector import RecordCollector
from streamkit.runtime.dlq import dead_letter
from streamkit.sinks.base import Coordinates, Sink, SinkUnavailable, Writer

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.05
BACKOFF_MAX = 5.0


class SinkHost(Protocol):
    """What the sinks use of their task (`runtime/task.py`)."""

    partition: int
    record: Any
    collector: RecordCollector
    dlq_topic: str
    done_offsets: dict[str, int | None]  # input topic → offset after the last finished record


class SinkBuffer:
    """One sink's rows in one task, and its writer."""

    def __init__(self, sink: Sink, writer: Writer, now: float) -> None:
        self.sink = sink
        self.writer = writer
        self.exactly_once = sink.mode == "exactly_once"
        self.rows: list[Any] = []
        self.records: list[Any] = []  # the source record of each row (dead letters)
        self.stored: dict[str, int] = {}  # input topic → next offset the destination has
        self.lock = asyncio.Lock()
        self.last_flush = now  # on the task's clock (the testing kit's is virtual)
        self.rows_written = 0
        self.refused = 0
        self.retries = 0


class TaskSinks:
    def __init__(
        self,
        task: SinkHost,
        sinks: Iterable[Sink],
        *,
        app_id: str,
        task_name: str,
        inputs: list[str],
        postgres_dsn: str | None,
        retry_timeout: float,
    ) -> None:
        self._task = task
        self._inputs = inputs
        self._retry_timeout = retry_timeout
        self._clock = WALL_CLOCK.get()  # batch_seconds: processing time, as timers see it
        now = self._clock.monotonic()
        self.buffers = {
            id(s): SinkBuffer(s, s.writer(app_id, task_name, postgres_dsn), now) for s in sinks
        }
        self._opened = False
        self._due_rows = min(b.sink.batch_rows for b in self.buffers.values())
        seconds = [b.sink.batch_seconds for b in self.buffers.values() if b.sink.batch_seconds]
        self._due_seconds = min(seconds) if seconds else None

    # 1. open ----------------------------------------------------------------------------------

    async def open(self) -> None:
        coords = [(t, self._task.partition) for t in self._inputs]
        for buf in self.buffers.values():
            await self._retry(buf, buf.writer.open)
            if buf.exactly_once:
                stored: dict[Coordinates, int] = await self._retry(
                    buf, functools.partial(buf.writer.stored, coords)
                )
                buf.stored = {t: o for (t, _), o in stored.items()}
                if buf.stored:
                    log.info(
                        "%s: rows stored up to %s: the records before are skipped",
                        buf.sink.label,
                        ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(stored.items())),
                    )
        self._opened = True

    # 2. append --------------------------------------------------------------------------------

    def push(self, sink: Sink) -> Callable[[Any], None]:
        """The last operator of a branch that ends in `sink`."""
        buf = self.buffers[id(sink)]
        task, rows, records, stored, row = self._task, buf.rows, buf.records, buf.stored, sink.row

        def append(value: Any) -> None:
            rec = task.record
            if rec is None:
                raise RuntimeError(
                    f"{sink.label} takes the rows of the record being processed: yield them "
                    "inside the body's `async for`"
                )
            if stored and rec.offset < stored.get(rec.topic, -1):
                return  # step 1: the destination has this record's rows
            rows.append(row(value))
            records.append(rec)

        return append

    def mark(self) -> bool:
        """A record boundary: True when a batch is due (`batch_rows` rows, or `batch_seconds`
        since the last flush)."""
        due = False
        for buf in self.buffers.values():
            n = len(buf.rows)
            if n >= self._due_rows:
                due = True
            elif n and self._due_seconds is not None:
                due = due or self._clock.monotonic() - buf.last_flush >= self._due_seconds
        return due

    # 3. flush ---------------------------------------------------------------------------------

    async def flush(self) -> None:
        """Write every sink's finished rows with the offsets they reach (one transaction of
        each destination); at a checkpoint, before Kafka commits those offsets."""
        if self._opened:
            for buf in self.buffers.values():
                await self._flush(buf)

    async def _flush(self, buf: SinkBuffer) -> None:
        async with buf.lock:
            done = self._task.done_offsets  # read with the rows, no await between: they agree
            take = _finished(buf.records, done)  # rows are only appended meanwhile
            if take is None:
                n = len(buf.rows)
                rows, records = buf.rows[:n], buf.records[:n]
            else:
                rows = [buf.rows[i] for i in take]
                records = [buf.records[i] for i in take]
                n = len(take)
            if not n:
                return  # nothing to write (offsets alone move nothing: no row is skipped)
            offsets: dict[Coordinates, tuple[int | None, int]] = {}
            if buf.exactly_once:
                part = self._task.partition
                for topic, at in done.items():
                    if at is not None and at > buf.stored.get(topic, -1):
                        offsets[(topic, part)] = (buf.stored.get(topic), at)
            refused = await self._write(buf, rows, offsets, records)
            if take is None:
                del buf.rows[:n], buf.records[:n]
            else:
                written = set(take)
                left = [i for i in range(len(buf.rows)) if i not in written]
                buf.rows[:] = [buf.rows[i] for i in left]
                buf.records[:] = [buf.records[i] for i in left]
            buf.last_flush = self._clock.monotonic()
            buf.rows_written += n - len(refused)
            for (topic, _), (_, at) in offsets.items():
                buf.stored[topic] = at
            for i, error in refused:  # 4.
                buf.refused += 1
                rec = records[i]
                dead_letter(
                    self._task.collector,
                    self._task.dlq_topic,
                    rec,
                    agent=buf.sink.name,
                    reason=f"{buf.sink.label} refused the row: {error}",
                    error_type="SinkRefused",
                )
                log.warning(
                    "%s refused the row of %s[%d]@%d: %s",
                    buf.sink.label,
                    rec.topic,
                    rec.partition,
                    rec.offset,
                    error,
                )

    async def _write(
        self,
        buf: SinkBuffer,
        rows: list[Any],
        offsets: dict[Coordinates, tuple[int | None, int]],
        records: list[Any],
    ) -> list[tuple[int, str]]:
        retried = False

        async def attempt() -> list[tuple[int, str]]:
            nonlocal retried
            if retried and offsets:  # did the lost connection's COMMIT happen?
                stored = await buf.writer.stored(list(offsets))
                if all(stored.get(c, -1) >= at for c, (_, at) in offsets.items()):
                    log.warning(
                        "%s: the batch had committed before the connection was lost (the "
                        "dead letters of its refused rows, if any, are not known)",
                        buf.sink.label,
                    )
                    return []
            retried = True
            return await buf.writer.write(rows, offsets, records)

        result: list[tuple[int, str]] = await self._retry(buf, attempt)
        return result

    async def _retry(self, buf: SinkBuffer, call: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + self._retry_timeout
        delay = BACKOFF_FIRST
        while True:
            try:
                return await call()
            except SinkUnavailable as exc:
                if time.monotonic() + delay > deadline:
                    raise
                buf.retries += 1
                log.warning("%s unavailable, retrying in %.2fs: %s", buf.sink.label, delay, exc)
                await buf.writer.reset()
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    def counts(self) -> list[tuple[str, str, int]]:
        """(sink, what, n) for the metrics: rows written and refused, retries."""
        out = []
        for buf in self.buffers.values():
            name = buf.sink.name
            out += [(name, "written", buf.rows_written), (name, "refused", buf.refused)]
            out.append((name, "retries", buf.retries))
        return out

    def close(self) -> None:
        for buf in self.buffers.values():
            buf.writer.close()


def _finished(records: list[Any], done: dict[str, int | None]) -> list[int] | None:
    """Which rows belong to finished records (step 2), by index; None: all of them."""
    take = [i for i, r in enumerate(records) if r.offset < (done.get(r.topic) or 0)]
    return None if len(take) == len(records) else take


def stage_sinks(stage: Stage) -> list[Sink]:
    """A stage's sinks beyond Kafka: those its streams end in (`to`), then its agents'."""
    found = [n.sink for n in stage.sinks if n.sink is not None]
    return found + [s for agent in stage.agents for s in agent.row_sinks]


async def flush_sinks(tasks: Iterable[Any]) -> None:
    """Every task's sinks, all tasks at once (a checkpoint's step before Kafka commits)."""
    sinks = [t.sinks for t in tasks if t.sinks is not None]
    if sinks:
        await asyncio.gather(*(s.flush() for s in sinks))
