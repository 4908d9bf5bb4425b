"""Stream-stream joins on event time: the declaration and its rules, pure functions, no I/O.

`orders.join(payments, within=600, grace=60, how="left")` pairs each left record with every
right record of the same key whose event time is at most 600 s away; `between=(lower, upper)`
is the interval join: a right record at `tr` matches a left record at `tl` when

    tl + lower <= tr <= tl + upper          (both ends included; within=w is between=(-w, w))

All times are epoch ms; `watermark` is the task's watermark (the minimum over both inputs).
"The watermark has passed x" means `watermark > x`. The rules, used by the join state
(`state/stream_join.py`) and checked against a brute-force oracle (tests/test_joins_logic.py):

1. A record at `t` is **late** when the watermark has passed `t + grace` on its arrival (the
   watermark counts the record itself): it goes to the late topic and joins nothing.
2. A record on time is **buffered** and **final** once the watermark has passed the last time
   an on-time partner could have: a left record at `tl + upper + grace`, a right one at
   `tr - lower + grace`. Then it is purged; an unmatched one of a side that keeps unmatched
   records (`how="left"`: left; `"outer"`: both) is emitted then, with no partner, never
   earlier (a later on-time partner is impossible by rule 1).
3. A pair is emitted when its second record arrives, at the event time of the later of the
   two; an unmatched record at its own time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streamkit.settings import ConfigError
from streamkit.windows import seconds_ms

LEFT, RIGHT = 0, 1
HOWS = ("inner", "left", "outer")
DAY_MS = 86_400_000  # the default `changelog_extra`

Joiner = Callable[[Any, Any], Any]


def pair(left: Any, right: Any) -> tuple[Any, Any]:
    """The default joiner: `(left, right)`, None for the side a left/outer join lacks."""
    return (left, right)


@dataclass(frozen=True)
class JoinSpec:
    """The bounds of one join, in ms, and its kind: every boundary decision is made here."""

    lower_ms: int
    upper_ms: int
    grace_ms: int
    how: str = "inner"

    def matches(self, left_ts: int, right_ts: int) -> bool:
        """A left record at `left_ts` and a right one at `right_ts` join (both ends included)."""
        return left_ts + self.lower_ms <= right_ts <= left_ts + self.upper_ms

    def partners(self, side: int, ts: int) -> tuple[int, int]:
        """The event times `[lo, hi]` (both included) of the other side's records that join a
        record of `side` at `ts`."""
        if side == LEFT:
            return ts + self.lower_ms, ts + self.upper_ms
        return ts - self.upper_ms, ts - self.lower_ms

    def late(self, ts: int, watermark: int) -> bool:
        """Rule 1: the watermark has passed `ts + grace`."""
        return watermark > ts + self.grace_ms

    def final_after(self, side: int, ts: int) -> int:
        """Rule 2: a record of `side` at `ts` is final (purged; emitted if unmatched and its
        side keeps unmatched records) once the watermark has passed this time."""
        return self.partners(side, ts)[1] + self.grace_ms

    def keeps_unmatched(self, side: int) -> bool:
        """Whether an unmatched record of `side` is emitted (with None for its partner)."""
        return self.how == "outer" or (self.how == "left" and side == LEFT)


def join_spec(
    *,
    within: float | None,
    between: tuple[float, float] | None,
    grace: float,
    how: str,
    what: str,
) -> JoinSpec:
    """The spec from what a user declares (seconds), or ConfigError saying what to change."""
    if how not in HOWS:
        raise ConfigError(f"{what}: how must be one of {', '.join(HOWS)}, got {how!r}")
    if (within is None) == (between is None):
        raise ConfigError(
            f"{what}: give within=seconds (a symmetric window) or between=(lower, upper) "
            "(an interval around the left record's time), one of them"
        )
    if within is not None:
        size = seconds_ms(within, f"{what}: within", zero_ok=True)
        lower, upper = -size, size
    else:
        if not isinstance(between, tuple | list) or len(between) != 2:
            raise ConfigError(f"{what}: between must be (lower, upper) seconds, got {between!r}")
        lower, upper = (_signed_ms(b, f"{what}: between") for b in between)
        if lower > upper:
            raise ConfigError(
                f"{what}: between=({between[0]}, {between[1]}) is empty: lower must be <= upper"
            )
    return JoinSpec(lower, upper, seconds_ms(grace, f"{what}: grace", zero_ok=True), how)


def _signed_ms(seconds: Any, what: str) -> int:
    if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds < 0:
        return -seconds_ms(-seconds, what)
    return seconds_ms(seconds, what, zero_ok=True)


class StreamJoin:
    """A declared stream-stream join: its spec, joiner and state (a table of both sides'
    buffered records, owned by the stage the join runs in)."""

    def __init__(
        self, name: str, spec: JoinSpec, joiner: Joiner, changelog_extra_ms: int = DAY_MS
    ) -> None:
        self.name = name
        self.spec = spec
        self.joiner = joiner
        # how long past the window + grace its changelog keeps a row (wall clock since the
        # row was written; `state/stream_join.changelog_config`)
        self.changelog_extra_ms = changelog_extra_ms
        self.table: Any = None  # state.table.Table, given by the app (`App.join_state`)
        self.late_topic: str | None = None  # `{app}-{name}-late`, set when the graph is built
        self.late_events = 0  # late records routed by this process
        self.emitted = 0

    def __repr__(self) -> str:
        return f"StreamJoin({self.name!r}, {describe(self.spec)})"


def describe(spec: JoinSpec) -> str:
    """`inner join between -600s and +600s, grace 60s` (topology, docs)."""
    return (
        f"{spec.how} join between {spec.lower_ms / 1000:+g}s and {spec.upper_ms / 1000:+g}s, "
        f"grace {spec.grace_ms / 1000:g}s"
    )
