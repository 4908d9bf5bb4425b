"""Count windows: windows over a key's events by number, not by time. Pure definitions.

A key's events are numbered 0, 1, 2... in the order its task processes them (its partition's
offset order). A count window is a half-open range of those numbers `[start, end)`:

- `sk.tumbling_count(n)`: `[0, n)`, `[n, 2n)`...: each event is in exactly one window, and a
  window is complete with its `n`-th event.
- `sk.sliding_count(n, every=k)`: a window ends after every `k`-th event and holds the last
  `n` events up to there (fewer at the start of the key): `[max(0, e - n), e)` for each end
  `e` that is a multiple of `k`.

A count window closes when its last event arrives, not with the watermark: event time only
orders values inside the window (`sk.first_of`, `sk.collect`). An incomplete window stays open
(and queryable) until more of its key's events come.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamkit.settings import ConfigError


@dataclass(frozen=True)
class TumblingCount:
    size: int

    @property
    def size_ms(self) -> int:
        return 0  # not a time window

    def windows_for(self, ts: int) -> list[tuple[int, int]]:
        return []  # by number, not by time: see `count_windows_of`

    def __str__(self) -> str:
        return f"tumbling count {self.size}"


@dataclass(frozen=True)
class SlidingCount:
    size: int
    every: int

    @property
    def size_ms(self) -> int:
        return 0

    def windows_for(self, ts: int) -> list[tuple[int, int]]:
        return []

    def __str__(self) -> str:
        return f"sliding count {self.size} every {self.every}"


CountWindow = TumblingCount | SlidingCount


def _whole(n: object, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{what} must be a whole number of events >= 1, got {n!r}")
    return n


def tumbling_count(size: int) -> TumblingCount:
    """Windows of `size` consecutive events of a key, one after another."""
    return TumblingCount(_whole(size, "the count window size"))


def sliding_count(size: int, every: int = 1) -> SlidingCount:
    """After every `every`-th event of a key, a window of its last `size` events."""
    size, every = _whole(size, "the count window size"), _whole(every, "every")
    if every > size:
        raise ConfigError(
            f"sliding_count({size}, every={every}) would skip events: every must be <= size "
            "(use tumbling_count for windows that do not overlap)"
        )
    return SlidingCount(size, every)


def count_windows_of(kind: CountWindow, n: int) -> list[tuple[int, int]]:
    """The count windows `[start, end)` that event number `n` (0-based) of its key is in,
    oldest first."""
    if isinstance(kind, TumblingCount):
        start = n - n % kind.size
        return [(start, start + kind.size)]
    first_end = n + 1 + (-(n + 1)) % kind.every  # the first multiple of every above n
    return [
        (max(0, end - kind.size), end) for end in range(first_end, n + kind.size + 1, kind.every)
    ]


def completed_by(kind: CountWindow, n: int) -> tuple[int, int] | None:
    """The window that event number `n` completes (its last event), if any."""
    end = n + 1
    if isinstance(kind, TumblingCount):
        return (end - kind.size, end) if end % kind.size == 0 else None
    return (max(0, end - kind.size), end) if end % kind.every == 0 else None
