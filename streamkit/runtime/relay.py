"""Relay stages: records routed in batches, in C, without decoding them.

A stage whose one input is a source topic of JSON values (no model) and whose only operator is
a `key_by` on a field, the values forwarded unchanged (pipeline A's and B's first stage:
`key_by("user_id")`), needs of each record only that field. The task loop (`task.py`) asks
its relay first: `_relay.c`'s `Relay` takes records from the left of the task's buffer while
each is sure (its value a JSON document orjson would decode, the field a str without escapes
or an integer; its key decodable by its topic's key codec) and routes them, reading the field
without building the dict. Then, per batch, this module does what the loop does per record:
events counted, the offset done, the event clock told the latest record time (the stage's
events take their records' timestamps). A record that is not sure goes through the loop's
per-record path, which decodes it (and dead-letters it if it is bad), exactly as before.

A batch ends at a full batch of the collector (the loop submits it), at the buffer's end, or
after `every` records counted (the loop's look at the watermark and timers comes at the same
counts as record by record). STREAMKIT_PURE_PYTHON=1 or no compiler: no relay.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from streamkit.aiokafka_internals import NATIVE_BATCHES
from streamkit.graph import Stage
from streamkit.runtime.collector import RecordCollector
from streamkit.runtime.operators import Compiler
from streamkit.serde import JsonCodec, RawCodec, StrCodec

if TYPE_CHECKING:
    from streamkit.runtime.async_map import AsyncCalls
    from streamkit.runtime.event_clock import EventClock
    from streamkit.runtime.sinks import TaskSinks
    from streamkit.runtime.stage_hooks import Input
    from streamkit.state.task_tables import TaskTables

try:
    from streamkit.runtime._relay import Relay

    NATIVE_RELAY = NATIVE_BATCHES  # built, and not turned off (STREAMKIT_PURE_PYTHON=1)
except ImportError:  # pragma: no cover (no C compiler where it was installed)
    NATIVE_RELAY = False

# how an input key's bytes decode for sure: the raw codec takes any, the str codec ASCII here
KEY_CHECKS: dict[type, int] = {RawCodec: 0, StrCodec: 1}
NONE_BUT_NONE = 2  # another key codec: only records without a key are sure


class RelayHost(Protocol):
    """What a relay reads and sets of its task."""

    stage: Stage
    clock: EventClock | None
    collector: RecordCollector
    events_in: int
    full: bool
    done_offsets: dict[str, int | None]
    state: TaskTables | None
    sinks: TaskSinks | None
    calls: AsyncCalls | None


def relay_for(
    task: RelayHost,
    inputs: dict[str, Input],
    compiler: Compiler,
    records: deque[Any],
    every: int,
) -> Callable[[], Any] | None:
    """The relay of `task` (its buffered `records`, its stage compiled by `compiler`), or
    None when its stage is not a relay stage. The relay returns the last record it took,
    None if it took none."""
    stateful = task.state or task.sinks or task.calls or task.stage.agents
    routers = compiler.routers
    if not NATIVE_RELAY or stateful or len(inputs) != 1 or len(routers) != 1:
        return None
    ((topic, inp),) = inputs.items()
    router = routers[0]
    exchange = router.exchange
    clock = task.clock
    if (
        type(inp.value_codec) is not JsonCodec
        or not router.raw
        or exchange.kind != "key_by"
        or exchange.key_field is None
        or inp.push is not compiler.node(exchange)  # the input's values go to the key_by only
        or (clock is not None and not clock.takes_record_time(topic))
    ):
        return None
    route, encode_key, utf8_keys = router.keyed(task.collector)
    key_check = KEY_CHECKS.get(type(inp.key_codec), NONE_BUT_NONE)
    native = Relay(records, route, exchange.key_field, encode_key, utf8_keys, key_check)
    done, collector = task.done_offsets, task.collector

    def relay() -> Any:
        if clock is not None and clock.said_idle:  # as the loop before an idle spell's first
            clock.unidle(collector)
        got = native(every - task.events_in % every)
        if got is None:
            return None
        count, last, latest, full = got
        task.events_in += count
        done[topic] = last.offset + 1
        if full:
            task.full = True
        if clock is not None:
            clock.observed(topic, latest)
        return last

    return relay
