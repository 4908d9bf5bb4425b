"""The two pipelines of the peers benchmark: their input, their oracle and how a run is checked.

A: N purchases (JSON, ~100 bytes, 10,000 users or `keys` users, fixed seed, unkeyed) →
   repartition by user → per-user running sum → `{"user_id", "total"}` per event. With
   keys ≥ N (the state-size runs) every event is a new user, so the state ends with N keys.
B: the same purchases with event times 20 ms apart (record timestamps) → repartition by user →
   60 s tumbling count per user, one update per event → `{"user_id", "start", "count"}`.
C: clicks and purchases (one input topic, 80 % clicks, event times 20 ms apart, record
   timestamps) → each kind repartitioned by user → an inner stream-stream join of a user's
   clicks and purchases at most 10 minutes apart (both ends included; grace 1 h, as B's) →
   `{"click", "purchase"}` (their ids), one output per pair, emitted when its later record
   arrives. One topic for both kinds keeps the harness's one pre-loaded input; each side is
   still its own repartitioned stream.

Every output names the input event it answers: A's (user, running total in cents) and B's
(user, window start, count) are unique, so the observer maps each output back to the input
index that caused it — which is how the paced runs measure end-to-end latency without any
system having to carry a timestamp through.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

USERS = 10_000
PARTITIONS = 4
SEED = 20241125
EVENT_TIME_BASE_MS = 1_700_000_000_000
EVENT_TIME_STEP_MS = 20  # pipeline B: 40,000 events span 800 s = 14 windows
WINDOW_MS = 60_000
JOIN_WITHIN_MS = 600_000  # pipeline C: 10 minutes either way (30,000 events)
CLICK_SHARE = 0.8


@dataclass
class Workload:
    """A pipeline's input and everything the oracle needs to check and time its output."""

    pipeline: str
    values: list[bytes]
    timestamps: list[int] | None  # record timestamps (ms); None: the producer's clock
    truth: dict[Any, float]  # A: user → total; B: (user, window start) → count
    index: dict[Any, int] = field(default_factory=dict)  # an output's identity → input index
    outputs: int = 0  # outputs expected (A, B: one per event; C: one per pair)

    def __post_init__(self) -> None:
        self.outputs = self.outputs or len(self.values)


def purchases(n: int, keys: int = USERS) -> tuple[list[bytes], list[tuple[str, float]]]:
    rng = random.Random(SEED)
    fresh = keys >= n  # every event its own user: the state grows to N keys
    values: list[bytes] = []
    rows: list[tuple[str, float]] = []
    for i in range(n):
        # event i goes to input partition i % PARTITIONS (round-robin, unkeyed); a user's
        # events all sit in one input partition, so every system sees them in the same order
        # and each running total names one input event
        slot = i if fresh else rng.randrange(keys // PARTITIONS) * PARTITIONS + i % PARTITIONS
        user = f"u{slot}"
        amount = round(1 + rng.random() * 499, 2)
        rows.append((user, amount))
        values.append(
            b'{"user_id":"%s","item":"sku-%05d","amount":%.2f,"qty":%d,"ts":%.3f}'
            % (
                user.encode(),
                rng.randrange(10_000),
                amount,
                1 + rng.randrange(9),
                (EVENT_TIME_BASE_MS + i * EVENT_TIME_STEP_MS) / 1000,
            )
        )
    return values, rows


def clicks_and_purchases(n: int) -> tuple[list[bytes], list[tuple[str, str]]]:
    """Pipeline C's input: (kind, user) per event, users with the same partition affinity as
    `purchases`, event time `ts` = the record timestamp."""
    rng = random.Random(SEED + 3)
    values: list[bytes] = []
    rows: list[tuple[str, str]] = []
    for i in range(n):
        user = f"u{rng.randrange(USERS // PARTITIONS) * PARTITIONS + i % PARTITIONS}"
        kind = "click" if rng.random() < CLICK_SHARE else "purchase"
        rows.append((kind, user))
        values.append(
            b'{"kind":"%s","id":%d,"user_id":"%s","ts":%.3f}'
            % (
                kind.encode(),
                i,
                user.encode(),
                (EVENT_TIME_BASE_MS + i * EVENT_TIME_STEP_MS) / 1000,
            )
        )
    return values, rows


def join_workload(n: int) -> Workload:
    """Pipeline C and its oracle: every (click, purchase) pair of a user at most
    JOIN_WITHIN_MS apart, answered by the later of the two input events."""
    values, rows = clicks_and_purchases(n)
    stamps = [EVENT_TIME_BASE_MS + i * EVENT_TIME_STEP_MS for i in range(n)]
    work = Workload("C", values, stamps, {})
    clicks: dict[str, list[int]] = {}
    purchases_of: dict[str, list[int]] = {}
    for i, (kind, user) in enumerate(rows):
        (clicks if kind == "click" else purchases_of).setdefault(user, []).append(i)
    for user, bought in purchases_of.items():
        for p in bought:
            for c in clicks.get(user, ()):
                if abs(stamps[c] - stamps[p]) <= JOIN_WITHIN_MS:
                    work.truth[(c, p)] = 1.0
                    work.index[(c, p)] = max(c, p)
    work.outputs = len(work.truth)
    return work


def workload(pipeline: str, n: int, keys: int = USERS) -> Workload:
    """A pipeline's input of N events over `keys` users (A and B; C keeps USERS)."""
    if pipeline == "C":
        return join_workload(n)
    values, rows = purchases(n, keys)
    if pipeline == "A":
        work = Workload("A", values, None, {})
        cents: dict[str, int] = {}
        for i, (user, amount) in enumerate(rows):
            cents[user] = cents.get(user, 0) + round(amount * 100)
            work.index[(user, cents[user])] = i
        work.truth = {user: c / 100 for user, c in cents.items()}
        return work
    if pipeline == "B":
        stamps = [EVENT_TIME_BASE_MS + i * EVENT_TIME_STEP_MS for i in range(n)]
        work = Workload("B", values, stamps, {})
        counts: dict[tuple[str, int], int] = {}
        for i, (user, _) in enumerate(rows):
            window = (user, stamps[i] - stamps[i] % WINDOW_MS)
            counts[window] = counts.get(window, 0) + 1
            work.index[(*window, counts[window])] = i
        work.truth = {k: float(v) for k, v in counts.items()}
        return work
    raise SystemExit(f"unknown pipeline {pipeline!r} (A, B or C)")


def identify(pipeline: str, value: dict[str, Any]) -> tuple[Any, float, Any]:
    """(truth key, the value the oracle compares, the identity `Workload.index` knows)."""
    if pipeline == "A":
        user, total = value["user_id"], float(value["total"])
        return user, total, (user, round(total * 100))
    if pipeline == "C":
        pair = (int(value["click"]), int(value["purchase"]))
        return pair, 1.0, pair
    user = value.get("user_id", value.get("key"))
    start = int(value["start"])
    if start < 100_000_000_000:  # seconds → ms
        start *= 1000
    count = value["count"] if "count" in value else value["value"]
    return (user, start), float(count), (user, start, int(count))


class Oracle:
    """What a run's outputs say so far: count, each key's latest value, and completeness."""

    def __init__(self, work: Workload) -> None:
        self.work = work
        self.count = 0
        self.last: dict[Any, float] = {}
        self.right: set[Any] = set()  # keys whose latest value is the final one
        self.unknown = 0  # outputs that answer no input event
        self.odd: dict[str, Any] = {}  # the last of them

    def observe(self, value: dict[str, Any]) -> int | None:
        """Note one output; return the index of the input event it answers, if any."""
        key, got, identity = identify(self.work.pipeline, value)
        self.count += 1
        self.last[key] = got
        want = self.work.truth.get(key)
        if want is not None and abs(got - want) <= 1e-6 * max(want, 1):
            self.right.add(key)
        else:
            self.right.discard(key)
        i = self.work.index.get(identity)
        if i is None:
            self.unknown += 1
            self.odd = value
        return i

    def complete(self) -> bool:
        return len(self.right) == len(self.work.truth)

    def check(self, n: int, guarantee: str) -> tuple[bool, str]:
        """Exactly N outputs under exactly-once (at least N under at-least-once), and every
        key's last value the oracle's (state counted each event once; C: every pair seen)."""
        if self.count < n or (guarantee == "exactly_once" and self.count != n):
            return False, f"{self.count} outputs, expected exactly {n}"
        if self.unknown:
            return False, f"{self.unknown} outputs answer no input event (e.g. {self.odd})"
        truth = self.work.truth
        wrong = [k for k, t in truth.items() if abs(self.last.get(k, -1.0) - t) > 1e-6 * max(t, 1)]
        if wrong:
            k = wrong[0]
            return False, (
                f"{len(wrong)} keys' last values differ from the oracle (e.g. {k}: "
                f"{self.last.get(k)}, expected {truth[k]})"
            )
        return True, ""
