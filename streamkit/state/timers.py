"""Timers: per-key callbacks at an event time or a processing (wall-clock) time.

`reminders = app.timers("reminders")`, then in the owning agent `reminders.at(key, when)`
(event time: fires once the task's watermark reaches `when`) or `reminders.after(key, 30)`
(processing time: fires 30 s from now). `@reminders.on_fire` names a plain function
`(key, payload) -> None` that runs inside the task, so it may use the agent's tables and
`topic.produce(...)`. Pending timers are rows of an ordinary table (`(fire ms, [kind, key])
→ payload`): checkpointed, changelogged and restored like any state; a timer's row is deleted
in the same checkpoint as the outputs of its callback, so under exactly-once it fires once.
"""

from __future__ import annotations

import heapq
import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from streamkit.context import CURRENT_TASK, WALL_CLOCK
from streamkit.eventtime import NO_WATERMARK, to_ms
from streamkit.serde import codec_for
from streamkit.settings import ConfigError
from streamkit.state.ownership import check_key, scope_for
from streamkit.state.table import _MISSING, Table, TablePartition
from streamkit.state.window_table import WATERMARK_ROW, WindowKeyCodec, stored_watermark

if TYPE_CHECKING:
    from streamkit.context import TaskScope

log = logging.getLogger(__name__)

EVENT, PROCESSING = "e", "p"
Handler = Callable[[Any, Any], None]


class Timers:
    def __init__(self, name: str, table: Table[Any, Any], key_type: Any = str) -> None:
        self.name = name
        self.table = table
        self.key_codec = codec_for(key_type)  # the partition check hashes the key so encoded
        self.handler: Handler | None = None
        table.checked_keys = False  # the inner key is checked per call
        table.key_codec = WindowKeyCodec(_TaggedKey())  # (fire ms, (kind, key))
        self.fired = 0

    def __repr__(self) -> str:
        return f"Timers({self.name!r})"

    def on_fire(self, fn: Handler) -> Handler:
        """Name the callback `(key, payload) -> None`: a plain function, run inside the task
        (it may use the stage's state and `topic.produce`)."""
        if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
            raise ConfigError(
                f"timers {self.name}: on_fire({getattr(fn, '__name__', fn)}) is async; a timer "
                "callback runs inside the task's checkpointed step and must be a plain def "
                "(produce outputs with topic.produce(...))"
            )
        if not callable(fn):
            raise ConfigError(f"timers {self.name}: on_fire needs a function, got {fn!r}")
        self.handler = fn
        return fn

    def _local(self, key: Any) -> TimerPartition:
        scope = CURRENT_TASK.get(None)
        part = None if scope is None else scope.timers.get(self.name)
        if part is None:
            scope_for("timers", self.name, self.table.stage_name)  # raises
        assert scope is not None
        if not self.table.local_keys:
            check_key("timers", self.name, self.key_codec.encode(key), key, scope)
        return part  # type: ignore[return-value]

    def at(self, key: Any, when: Any, payload: Any = None) -> None:
        """Fire once the watermark reaches `when` (epoch seconds or a datetime)."""
        self._local(key).schedule(EVENT, to_ms(when), key, payload)

    def after(self, key: Any, seconds: float, payload: Any = None) -> None:
        """Fire `seconds` from now, by the wall clock."""
        fire = round((WALL_CLOCK.get().time() + seconds) * 1000)
        self._local(key).schedule(PROCESSING, fire, key, payload)

    def open_partition(self, rows: TablePartition, task: TaskScope) -> TimerPartition:
        return TimerPartition(self, rows, task)


class _TaggedKey:
    """(kind, key) as JSON, read back as a tuple (it is a dict key in the cache)."""

    name = "timer-key"

    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(obj)

    def decode(self, data: bytes) -> Any:
        kind, key = orjson.loads(data)
        return kind, key

    @property
    def loads(self) -> Callable[[bytes], Any]:
        return self.decode


class TimerPartition:
    def __init__(self, timers: Timers, rows: TablePartition, task: TaskScope) -> None:
        self.timers = timers
        self.rows = rows
        self.task = task
        self._due: dict[str, list[tuple[int, int, Any]]] = {EVENT: [], PROCESSING: []}
        self._seq = 0
        self.watermark = NO_WATERMARK

    def load(self) -> int:
        for fire, tagged in self.rows.iter_keys():
            if (fire, tagged) != WATERMARK_ROW:
                kind, key = tagged
                self._push(kind, fire, key)
        self.watermark = stored_watermark(self.rows)
        return self.watermark

    def _push(self, kind: str, fire: int, key: Any) -> None:
        self._seq += 1
        heapq.heappush(self._due[kind], (fire, self._seq, key))

    def schedule(self, kind: str, fire: int, key: Any, payload: Any) -> None:
        row = (fire, (kind, key))
        if self.rows.get(row) is _MISSING:
            self._push(kind, fire, key)
        self.rows.set(row, {"payload": payload})

    def next_processing(self) -> int | None:
        """Epoch ms of the next processing-time timer (None: none)."""
        due = self._due[PROCESSING]
        return due[0][0] if due else None

    def advance(self, watermark: int) -> None:
        """Event-time timers up to the watermark fire (called by the task's clock)."""
        if watermark <= self.watermark:
            return
        self.watermark = watermark
        self.rows.set(WATERMARK_ROW, watermark)
        self._fire(EVENT, watermark)

    def advance_processing(self, now_ms: int) -> None:
        self._fire(PROCESSING, now_ms)

    def _fire(self, kind: str, upto: int) -> None:
        due, rows, handler = self._due[kind], self.rows, self.timers.handler
        while due and due[0][0] <= upto:
            fire, _, key = heapq.heappop(due)
            row = (fire, (kind, key))
            stored = rows.get(row)
            if stored is _MISSING:
                continue  # fired already (the same timer scheduled twice)
            rows.delete(row)
            self.timers.fired += 1
            if handler is None:
                log.warning("timer %s fired for %r with no @on_fire handler", self.timers.name, key)
                continue
            handler(key, stored["payload"])
