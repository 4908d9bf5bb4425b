"""More window aggregations: mean, first and last by event time, a bounded collect, several
aggregations on one window, and a custom aggregator. Pure definitions, no I/O.

Every aggregation folds `(value, event time in ms)` into a JSON-able accumulator (`add`),
merges two accumulators (`merge`, for session windows: `a` is the earlier session's) and
turns one into the window's result (`result`). Accumulators are stored as JSON in the window
table, so they hold lists and dicts, never tuples or sets.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from streamkit.count_windows import SlidingCount
from streamkit.serde import JSON
from streamkit.settings import ConfigError
from streamkit.windows import Aggregation, Session, _getter

Of = str | Callable[[Any], Any] | None
_PLAIN = (int, float, str, bool, type(None))


def plain(item: Any) -> Any:
    """An item kept in an accumulator, as JSON keeps it (a pydantic model as its dict), so
    that a result is the same before and after a restore, and the output topic can carry it."""
    if type(item) in _PLAIN:
        return item
    return orjson.loads(JSON.encode(item))


@dataclass(frozen=True)
class _Mean:
    get: Callable[[Any], Any]
    name: str = "mean"
    mergeable: bool = True

    def initial(self) -> Any:
        return [0, 0]  # [sum, count]

    def add(self, acc: Any, value: Any, ts: int) -> Any:
        return [acc[0] + self.get(value), acc[1] + 1]

    def merge(self, a: Any, b: Any) -> Any:
        return [a[0] + b[0], a[1] + b[1]]

    def result(self, acc: Any) -> Any:
        return acc[0] / acc[1] if acc[1] else None


def mean_of(of: Of = None) -> Aggregation:
    """The mean of a field (name), of a function's result, or of the values (`null` for an
    empty window)."""
    return _Mean(_getter(of))


@dataclass(frozen=True)
class _ByTime:
    """The item with the smallest (`latest=False`) or largest event time; ties: the one
    added first (smallest) or last (largest). Accumulator `[ts, item]` or None."""

    get: Callable[[Any], Any]
    latest: bool
    name: str
    mergeable: bool = True

    def initial(self) -> Any:
        return None

    def add(self, acc: Any, value: Any, ts: int) -> Any:
        return self.merge(acc, [ts, plain(self.get(value))])

    def merge(self, a: Any, b: Any) -> Any:
        if a is None or b is None:
            return b if a is None else a
        if self.latest:
            return b if b[0] >= a[0] else a
        return a if a[0] <= b[0] else b

    def result(self, acc: Any) -> Any:
        return None if acc is None else acc[1]


def first_of(of: Of = None) -> Aggregation:
    """The value (or field, or function result) of the window's earliest event by event time
    (not by arrival); of two at the same time, the one that arrived first."""
    return _ByTime(_getter(of), False, "first")


def last_of(of: Of = None) -> Aggregation:
    """The value of the window's latest event by event time; of two at the same time, the one
    that arrived last."""
    return _ByTime(_getter(of), True, "last")


def _ts(entry: list[Any]) -> int:
    return int(entry[0])


@dataclass(frozen=True)
class _Collect:
    """`[[ts, item], ...]` in event-time order (arrival order among equal times), at most
    `limit` long: the earliest `limit` (`keep="first"`) or the latest (`keep="last"`)."""

    get: Callable[[Any], Any]
    limit: int
    keep_last: bool
    name: str = "collect"
    mergeable: bool = True

    def initial(self) -> Any:
        return []

    def add(self, acc: Any, value: Any, ts: int) -> Any:
        acc = list(acc)
        acc.insert(bisect.bisect_right(acc, ts, key=_ts), [ts, plain(self.get(value))])
        return self._trim(acc)

    def merge(self, a: Any, b: Any) -> Any:
        return self._trim(list(heapq.merge(a, b, key=_ts)))  # stable: a's first among ties

    def _trim(self, acc: list[Any]) -> list[Any]:
        if len(acc) <= self.limit:
            return acc
        return acc[-self.limit :] if self.keep_last else acc[: self.limit]

    def result(self, acc: Any) -> Any:
        return [item for _, item in acc]


def collect(of: Of = None, *, limit: int = 100, keep: str = "first") -> Aggregation:
    """The window's values (or a field of them) as a list in event-time order, bounded:
    at most `limit` items, the earliest (`keep="first"`) or the latest (`keep="last"`)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"sk.collect: limit must be a whole number >= 1, got {limit!r}")
    if keep not in ("first", "last"):
        raise ConfigError(f"sk.collect: keep must be 'first' or 'last', got {keep!r}")
    return _Collect(_getter(of), limit, keep == "last")


@dataclass(frozen=True)
class Several:
    """Several aggregations over one window: one accumulator each (a list), and a result
    that is one field per aggregation."""

    parts: tuple[tuple[str, Aggregation], ...]
    name: str = "several"

    @property
    def mergeable(self) -> bool:
        return all(agg.mergeable for _, agg in self.parts)

    def initial(self) -> Any:
        return [agg.initial() for _, agg in self.parts]

    def add(self, acc: Any, value: Any, ts: int) -> Any:
        return [agg.add(a, value, ts) for (_, agg), a in zip(self.parts, acc, strict=True)]

    def merge(self, a: Any, b: Any) -> Any:
        return [agg.merge(x, y) for (_, agg), x, y in zip(self.parts, a, b, strict=True)]

    def result(self, acc: Any) -> Any:
        return {field: agg.result(a) for (field, agg), a in zip(self.parts, acc, strict=True)}


def aggregate(*aggregations: Aggregation, **named: Aggregation) -> Aggregation:
    """Several aggregations on one window, each a field of its result: positional ones under
    their own name (`count`, `sum`...), keyword ones under the keyword
    (`sk.aggregate(sk.count(), spent=sk.sum_of("amount"), avg=sk.mean_of("amount"))`)."""
    parts = [(agg.name, agg) for agg in aggregations] + list(named.items())
    if not parts:
        raise ConfigError("sk.aggregate() needs at least one aggregation")
    fields = [field for field, _ in parts]
    clash = sorted({f for f in fields if fields.count(f) > 1})
    if clash:
        raise ConfigError(
            f"sk.aggregate: two aggregations give the field {clash[0]!r}: name them with "
            f"keywords, e.g. sk.aggregate(low=sk.min_of('x'), high=sk.min_of('y'))"
        )
    reserved = {"key", "start", "end", "final"} & set(fields)
    if reserved:
        raise ConfigError(f"sk.aggregate: {sorted(reserved)[0]!r} is a field of every result")
    for field, agg in parts:
        if not hasattr(agg, "initial") or not hasattr(agg, "merge"):
            raise ConfigError(f"sk.aggregate: {field}={agg!r} is not an aggregation")
    return Several(tuple(parts), ", ".join(fields))


def as_aggregation(spec: Aggregation | Sequence[Aggregation] | Mapping[str, Aggregation]) -> Any:
    """What `app.window` accepts: one aggregation, a list of them, or a dict field → one."""
    if isinstance(spec, Mapping):
        return aggregate(**spec)
    if isinstance(spec, list | tuple):
        return aggregate(*spec)
    return spec


@dataclass(frozen=True)
class _Custom:
    init: Callable[[], Any]
    step: Callable[[Any, Any], Any]
    combine: Callable[[Any, Any], Any] | None
    finish: Callable[[Any], Any] | None
    name: str

    @property
    def mergeable(self) -> bool:
        return self.combine is not None

    def initial(self) -> Any:
        return self.init()

    def add(self, acc: Any, value: Any, ts: int) -> Any:
        return self.step(acc, value)

    def merge(self, a: Any, b: Any) -> Any:
        if self.combine is None:
            raise ConfigError(f"aggregation {self.name} has no merge")  # refused at declaration
        return self.combine(a, b)

    def result(self, acc: Any) -> Any:
        return acc if self.finish is None else self.finish(acc)


def aggregator(
    init: Callable[[], Any],
    add: Callable[[Any, Any], Any],
    merge: Callable[[Any, Any], Any] | None = None,
    result: Callable[[Any], Any] | None = None,
    *,
    name: str = "value",
) -> Aggregation:
    """A custom aggregation: `init()` a new accumulator, `add(acc, value) -> acc`,
    `merge(a, b) -> acc` two accumulators as one (needed by session windows, which merge
    sessions an event bridges; `a` is the earlier session), `result(acc)` what the window
    emits (default: the accumulator) under the field `name`. The accumulator is stored as
    JSON: lists, dicts, numbers, strings."""
    for what, fn in (("init", init), ("add", add), ("merge", merge), ("result", result)):
        if fn is not None and not callable(fn):
            raise ConfigError(f"sk.aggregator: {what} must be a function, got {fn!r}")
    return _Custom(init, add, merge, result, name)


def check_window(name: str, kind: Any, spec: Any, emit: str) -> Aggregation:
    """The aggregation of `app.window(name, kind, spec, emit=...)`, or ConfigError: session
    windows merge accumulators (an aggregation that cannot is refused), and a sliding count
    window emits each window once, when complete."""
    agg: Aggregation = as_aggregation(spec)
    if not hasattr(agg, "initial") or not hasattr(agg, "add"):
        raise ConfigError(
            f"window {name}: {spec!r} is not an aggregation (sk.count(), sk.sum_of(...), "
            "sk.aggregator(...), or a list or dict of them)"
        )
    if isinstance(kind, SlidingCount) and emit != "final":
        raise ConfigError(
            f"window {name}: a sliding count window emits each window once, complete: "
            "use emit='final'"
        )
    if isinstance(kind, Session) and not agg.mergeable:
        raise ConfigError(
            f"window {name}: session windows merge two sessions' accumulators when an event "
            f"bridges them, and aggregation {agg.name} has no merge: give it merge= (e.g. "
            "sk.reduce(fn, initial=[], merge=lambda a, b: a + b))"
        )
    return agg
