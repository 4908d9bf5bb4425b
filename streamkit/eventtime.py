"""Event time: where an event's time comes from, and watermarks. Pure, no I/O.

A topic declares its timestamps: the Kafka record timestamp (default), a value field, or a
function of the value; `out_of_orderness` says how far behind the newest event an event may
still arrive in order. Times are epoch milliseconds.

A task's watermark (`WatermarkTracker`):
- on a source topic: the largest event time seen on its partition minus the out-of-orderness;
- after a repartition hop: the minimum over the upstream tasks' watermarks (each upstream task
  writes watermark control records to every partition of the repartition topic), leaving out
  upstream tasks that said they are idle (unless all are).
It never goes back. Control records carry a header `streamkit.watermark` and are never handed
to agent code.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streamkit.context import WALL_CLOCK

NO_WATERMARK = -(2**63)  # nothing seen yet: every window is open
CONTROL_HEADER = "streamkit.watermark"
MAX_EVENT_MS = 2**62  # a bigger event time is garbage (it would not fit SQLite or Kafka)

TimestampSpec = str | Callable[[Any], Any] | None


def processing_time(value: Any) -> float:
    """`app.topic(..., timestamp=sk.processing_time)`: events get the wall-clock time at which
    the worker reads them (windows over processing time)."""
    return WALL_CLOCK.get().time()


def to_ms(value: Any, unit: str = "s") -> int:
    """An event time as epoch ms: a datetime, or a number of seconds (`unit="s"`) or
    milliseconds (`unit="ms"`)."""
    if isinstance(value, dt.datetime):
        moment: dt.datetime = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return round(moment.timestamp() * 1000)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"an event time must be a number or a datetime, got {value!r}"[:200])
    try:
        ms = round(value * 1000) if unit == "s" else round(value)
    except (OverflowError, ValueError):  # inf, nan
        ms = MAX_EVENT_MS + 1
    if not -MAX_EVENT_MS <= ms <= MAX_EVENT_MS:
        raise ValueError(f"event time {value!r} ({unit}) is out of range"[:200])
    return ms


@dataclass(frozen=True)
class TimestampPolicy:
    """How a topic's events get their time. `extract(value, record_ms)` → epoch ms."""

    spec: TimestampSpec = None
    unit: str = "s"
    out_of_orderness_ms: int = 0

    @property
    def from_record(self) -> bool:
        return self.spec is None

    def extract(self, value: Any, record_ms: int) -> int:
        spec = self.spec
        if spec is None:
            return record_ms
        if callable(spec):
            return to_ms(spec(value), self.unit)
        raw = value[spec] if isinstance(value, dict) else getattr(value, spec)
        return to_ms(raw, self.unit)


def control_headers(upstream: int, watermark: int, idle: bool) -> list[tuple[str, bytes]]:
    return [(CONTROL_HEADER, b"%d:%d:%d" % (upstream, watermark, idle))]


def read_control(headers: Any) -> tuple[int, int, bool] | None:
    """(upstream task, watermark, idle) of a control record; None for a data record."""
    if not headers:
        return None
    name, value = headers[0]
    if name != CONTROL_HEADER:
        return None
    try:
        upstream, watermark, idle = value.split(b":")
        return int(upstream), int(watermark), idle == b"1"
    except (ValueError, TypeError, AttributeError):
        raise ValueError(f"malformed {CONTROL_HEADER} header {value!r:.80}") from None


class WatermarkTracker:
    """The watermark of one task. `upstreams=0`: the task reads a source topic and tracks
    its own partition; `upstreams=n`: it reads a repartition topic written by n tasks."""

    def __init__(self, out_of_orderness_ms: int, upstreams: int = 0) -> None:
        self.out_of_orderness_ms = out_of_orderness_ms
        self.upstreams = upstreams
        self.max_seen = NO_WATERMARK
        self.heard: dict[int, int] = {}  # upstream task → its latest watermark
        self.idle: set[int] = set()
        self.current = NO_WATERMARK

    def observe(self, ts: int) -> bool:
        """A data record's event time (source tasks). True if the watermark advanced."""
        if ts <= self.max_seen:
            return False
        self.max_seen = ts
        if self.upstreams:
            return False
        return self.advance_to(ts - self.out_of_orderness_ms)

    def from_upstream(self, upstream: int, watermark: int, idle: bool) -> bool:
        """A control record. True if the watermark advanced."""
        if watermark > self.heard.get(upstream, NO_WATERMARK):
            self.heard[upstream] = watermark
        if idle:
            self.idle.add(upstream)
        else:
            self.idle.discard(upstream)
        # everyone idle: nobody is a straggler, so the plain minimum over all of them
        active = [u for u in range(self.upstreams) if u not in self.idle] or range(self.upstreams)
        return self.advance_to(min(self.heard.get(u, NO_WATERMARK) for u in active))

    @property
    def all_idle(self) -> bool:
        """A repartition input whose every upstream task said it is idle: nothing of it is in
        flight (the idle flag follows an upstream's data in each partition)."""
        return bool(self.upstreams) and len(self.idle) >= self.upstreams

    def advance_to(self, candidate: int) -> bool:
        """Move the watermark to `candidate` if that is forward. True if it moved."""
        if candidate > self.current:
            self.current = candidate
            return True
        return False

    # -- checkpointed with the state of the stage -------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "max_seen": self.max_seen,
            "heard": {str(u): w for u, w in self.heard.items()},
        }

    def restore(self, saved: dict[str, Any]) -> None:
        self.current = max(self.current, int(saved["current"]))
        self.max_seen = max(self.max_seen, int(saved["max_seen"]))
        for u, w in saved["heard"].items():
            self.heard[int(u)] = max(self.heard.get(int(u), NO_WATERMARK), int(w))
