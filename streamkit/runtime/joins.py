"""A stage's stream-stream joins in one task: opening their state, feeding both sides, and
handing their results to the operators after the join.

Each side of a join is an operator of the stage (`side_input`, compiled by `operators.py`):
it passes the record being processed (its key bytes, event time, value, offset) to the join's
`JoinPartition` (`state/stream_join.py`). What the join emits (a pair when a record matches
buffered partners; an unmatched record of a left/outer join once the watermark made it
final, which can happen while another record, or a watermark control record, is processed)
is queued on the task (`joined`) with a `JoinedRecord`: after the record in flight, the task
pushes each result through the operators after the join as an event of its own (its key,
its event time, the join's name as its topic), agents included (`stage_hooks.drain_joins`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from streamkit.graph import Stage, forwards_input_bytes, value_type_at
from streamkit.joins import LEFT, RIGHT, StreamJoin
from streamkit.serde import codec_for
from streamkit.state.stream_join import JoinPartition
from streamkit.state.table import TablePartition
from streamkit.streams import JoinSideNode

if TYPE_CHECKING:
    from streamkit.runtime.event_clock import EventClock

Push = Callable[[Any], None]


@dataclass(slots=True)
class JoinedRecord:
    """The record the operators after a join see for one of its results: its key, its event
    time, the join's name as topic and the offset of the input record that made it (what a
    dead letter of a failing operator names). One per result: not frozen, whose `__init__`
    costs three times as much (nothing changes it)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes
    value: None = None
    headers: tuple[()] = ()


# (the operators after the join, its joiner, the result's record, its decoded key, the left
# and right values): the task calls the joiner as it pushes the result on, so a joiner that
# raises dead-letters that result only
Joined = tuple[Push, Callable[[Any, Any], Any], JoinedRecord, Any, Any, Any]


class JoinHost(Protocol):
    """What a join uses of its task (`runtime/task.py`)."""

    partition: int
    record: Any
    event_ts: int | None
    joins: dict[str, JoinPartition]
    joined: deque[Joined]

    def route_late(self, topic: str, reason: str) -> None: ...


def open_joins(
    host: JoinHost, stage: Stage, tables: dict[str, TablePartition], clock: EventClock | None
) -> dict[str, JoinPartition]:
    """The stage's joins over their open tables, loaded; the watermark their rows reflect
    restores the task's clock, which then advances them."""
    parts: dict[str, JoinPartition] = {}
    for join in stage.joins:
        sides = {n.side: n for n in stage.nodes if isinstance(n, JoinSideNode) and n.join is join}
        codecs = (
            codec_for(value_type_at(stage, sides[LEFT])),
            codec_for(value_type_at(stage, sides[RIGHT])),
        )
        part = parts[join.name] = JoinPartition(
            join, tables[join.table.name], codecs, _late(host, join)
        )
        stored = part.load()
        if clock is not None:
            clock.restore(stored)
            clock.windows.append(part)
    return parts


def _late(host: JoinHost, join: StreamJoin) -> Callable[[int, int, int], None]:
    grace = join.spec.grace_ms

    def late(side: int, ts: int, watermark: int) -> None:
        join.late_events += 1
        host.route_late(
            join.late_topic or "",
            f"late for join {join.name}: a {'left' if side == LEFT else 'right'} record at "
            f"event time {ts} arrived after the watermark ({watermark}) passed it plus the "
            f"grace ({grace} ms)",
        )

    return late


def side_input(host: JoinHost, node: JoinSideNode, after: Push, stage: Stage) -> Push:
    """The operator of one side of a join: the record being processed enters the join. The
    join's results go to `after` (the operators after the join), queued on the task."""
    join = node.join
    assert join is not None
    part = host.joins[join.name]
    name, partition, queue, joiner = join.name, host.partition, host.joined, join.joiner
    loads_key = stage.source.key_codec.loads

    def emit(key: bytes, ts: int, left: Any, right: Any, offset: int) -> None:
        join.emitted += 1
        rec = JoinedRecord(name, partition, offset, ts, key)
        queue.append((after, joiner, rec, loads_key(key), left, right))

    part.emit = emit
    push, side = part.push, node.side
    # the value is the record's, unchanged, in the side's encoding: its bytes are buffered
    raw = forwards_input_bytes(stage, node, part.codecs[side])

    def enter(value: Any) -> None:
        rec = host.record
        key = rec.key
        if key is None:
            raise ValueError(
                f"join {name}: a record without a key joins nothing: key_by the stream "
                "before the join (or declare the join with on=...)"
            )
        ts = host.event_ts
        push(
            side, key, rec.timestamp if ts is None else ts, value, rec.offset,
            rec.value if raw else None,
        )  # fmt: skip

    return enter
