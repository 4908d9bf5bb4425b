"""Windows and aggregations: pure definitions, no I/O.

A window kind maps an event time to the windows that contain it (`windows_for`); an
aggregation folds values into a JSON-able accumulator (`initial`, `add`). Times are epoch
milliseconds, windows half-open `[start, end)`. Window tables (`state/window_table.py`) store
one accumulator per (window start, key) and close a window once the watermark passes its end
plus the allowed lateness.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from streamkit.settings import ConfigError


def seconds_ms(seconds: Any, what: str, *, zero_ok: bool = False) -> int:
    """A duration given in seconds as whole ms; ConfigError when it is not a number, not
    finite, or not positive (or negative, with `zero_ok`)."""
    kind = "a non-negative" if zero_ok else "a positive"
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ConfigError(f"{what} must be {kind} number of seconds, got {seconds!r}")
    if not math.isfinite(seconds) or abs(seconds) > 10**12:
        raise ConfigError(f"{what} must be {kind} number of seconds, got {seconds!r}")
    ms = round(seconds * 1000)
    if ms < 0 or (ms == 0 and not zero_ok):
        raise ConfigError(f"{what} must be {kind} number of seconds, got {seconds!r}")
    return ms


class WindowKind(Protocol):
    @property
    def size_ms(self) -> int: ...

    def windows_for(self, ts: int) -> list[tuple[int, int]]:
        """The windows `[start, end)` that contain event time `ts`, oldest first."""


@dataclass(frozen=True)
class Tumbling:
    """Fixed-size windows, one after another: `Tumbling(60)` is every whole minute."""

    size_ms: int

    def windows_for(self, ts: int) -> list[tuple[int, int]]:
        start = ts - ts % self.size_ms
        return [(start, start + self.size_ms)]

    def __str__(self) -> str:
        return f"tumbling {self.size_ms / 1000:g}s"


@dataclass(frozen=True)
class Hopping:
    """Fixed-size windows starting every `step`: an event is in `size / step` windows."""

    size_ms: int
    step_ms: int

    def windows_for(self, ts: int) -> list[tuple[int, int]]:
        size, step = self.size_ms, self.step_ms
        start = ts - ts % step  # the latest window start at or before ts
        found = []
        while start > ts - size:
            found.append((start, start + size))
            start -= step
        found.reverse()
        return found

    def __str__(self) -> str:
        return f"hopping {self.size_ms / 1000:g}s every {self.step_ms / 1000:g}s"


@dataclass(frozen=True)
class Session:
    """Per-key sessions: events closer than `gap` to each other are one session
    `[first event, last event + gap)`; a new event can merge two sessions."""

    gap_ms: int

    @property
    def size_ms(self) -> int:
        return self.gap_ms

    def windows_for(self, ts: int) -> list[tuple[int, int]]:
        return [(ts, ts + self.gap_ms)]  # before merging with the key's other sessions

    def __str__(self) -> str:
        return f"session gap {self.gap_ms / 1000:g}s"


@dataclass(frozen=True)
class Sliding:
    """One window per event: `[t - size, t]` ending at the event's time `t`, over the key's
    events in that range (both ends included), as Kafka Streams' sliding windows."""

    size_ms: int

    def windows_for(self, ts: int) -> list[tuple[int, int]]:
        return [(ts - self.size_ms, ts)]

    def __str__(self) -> str:
        return f"sliding {self.size_ms / 1000:g}s"


def sliding(seconds: float) -> Sliding:
    return Sliding(seconds_ms(seconds, "the window size"))


def session(gap: float) -> Session:
    return Session(seconds_ms(gap, "the session gap"))


def tumbling(seconds: float) -> Tumbling:
    return Tumbling(seconds_ms(seconds, "the window size"))


def hopping(seconds: float, every: float) -> Hopping:
    size, step = seconds_ms(seconds, "the window size"), seconds_ms(every, "the hop")
    if size % step:
        raise ConfigError(
            f"the window size ({seconds}s) must be a multiple of the hop ({every}s): change "
            "one of them"
        )
    return Hopping(size, step)


# -- aggregations --------------------------------------------------------------------------------


class Aggregation(Protocol):
    @property
    def name(self) -> str: ...

    def initial(self) -> Any: ...

    @property
    def mergeable(self) -> bool:
        """True if `merge` can combine two accumulators (session windows need it)."""

    def add(self, acc: Any, value: Any, ts: int) -> Any:
        """`value`, of event time `ts` (ms), folded into `acc`."""

    def merge(self, a: Any, b: Any) -> Any:
        """Two accumulators as one (session windows merge; `a` is the earlier session's)."""

    def result(self, acc: Any) -> Any:
        """What a window emits for its accumulator."""


def _getter(of: str | Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    if of is None:
        return lambda value: value
    if callable(of):
        return of
    field = of

    def get(value: Any) -> Any:
        return value[field] if isinstance(value, dict) else getattr(value, field)

    return get


@dataclass(frozen=True)
class _Fold:
    name: str
    start: Any
    step: Callable[[Any, Any], Any]
    get: Callable[[Any], Any]
    combine: Callable[[Any, Any], Any] | None = None  # merge; None: `step` merges

    @property
    def mergeable(self) -> bool:
        return self.combine is not None or self.start is None

    def initial(self) -> Any:
        return self.start

    def add(self, acc: Any, value: Any, ts: int) -> Any:
        item = self.get(value)
        return item if acc is None else self.step(acc, item)

    def merge(self, a: Any, b: Any) -> Any:
        if a is None or b is None:
            return b if a is None else a
        return (self.combine or self.step)(a, b)

    def result(self, acc: Any) -> Any:
        return acc


@dataclass(frozen=True)
class _Count:
    name: str = "count"
    mergeable: bool = True

    def initial(self) -> Any:
        return 0

    def add(self, acc: Any, value: Any, ts: int) -> Any:
        return acc + 1

    def merge(self, a: Any, b: Any) -> Any:
        return a + b

    def result(self, acc: Any) -> Any:
        return acc


def count() -> Aggregation:
    return _Count()


def sum_of(of: str | Callable[[Any], Any] | None = None) -> Aggregation:
    """The sum of a field (name), of a function's result, or of the values themselves."""
    return _Fold("sum", 0, operator.add, _getter(of), operator.add)


def min_of(of: str | Callable[[Any], Any] | None = None) -> Aggregation:
    return _Fold("min", None, min, _getter(of))


def max_of(of: str | Callable[[Any], Any] | None = None) -> Aggregation:
    return _Fold("max", None, max, _getter(of))


def reduce(
    fn: Callable[[Any, Any], Any],
    initial: Any = None,
    *,
    merge: Callable[[Any, Any], Any] | None = None,
) -> Aggregation:
    """`fn(acc, value) -> acc`; the accumulator must be JSON-able (it is stored as JSON).
    With `initial=None` the first value is the first accumulator, and session windows merge
    two accumulators with `fn(a, b)` unless `merge=` says otherwise. With an `initial`, the
    accumulator is not a value: session windows need `merge(a, b) -> acc` (`a` is the earlier
    session's), refused at declaration without it."""
    return _Fold("reduce", initial, fn, _getter(None), merge)


@dataclass(frozen=True)
class _TopK:
    k: int
    get: Callable[[Any], Any]
    name: str = "top_k"
    mergeable: bool = True

    def initial(self) -> Any:
        return {}

    def add(self, acc: Any, value: Any, ts: int) -> Any:
        item = str(self.get(value))
        acc[item] = acc.get(item, 0) + 1
        return acc

    def merge(self, a: Any, b: Any) -> Any:
        merged = dict(a)
        for item, n in b.items():
            merged[item] = merged.get(item, 0) + n
        return merged

    def result(self, acc: Any) -> Any:
        return top_items(acc, self.k)


def top_items(counts: dict[str, int], k: int) -> list[list[Any]]:
    """The `k` most counted items as `[[item, count], ...]`: highest count first, ties by item."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [[item, n] for item, n in ranked[:k]]


def top_k(k: int, of: str | Callable[[Any], Any] | None = None) -> Aggregation:
    """The `k` most frequent items in a window (an item is a field, a function's result, or the
    value, as a string). The accumulator counts every item of the window (a dict, stored as
    JSON); the window emits `[[item, count], ...]`, highest count first, ties by item. Over a
    key_by on the item, a window keyed per partition gives each partition's exact top k, and
    the union of the partitions' lists holds the exact overall top k (`merge_top`)."""
    if k < 1:
        raise ValueError(f"top_k needs k >= 1, got {k}")
    return _TopK(k, _getter(of))


def merge_top(lists: list[list[list[Any]]], k: int) -> list[list[Any]]:
    """The overall top k from per-partition top-k lists over disjoint items."""
    counts: dict[str, int] = {}
    for ranked in lists:
        for item, n in ranked:
            counts[item] = counts.get(item, 0) + n
    return top_items(counts, k)
