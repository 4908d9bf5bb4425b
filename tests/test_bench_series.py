"""The side-by-side harness's time series (bench/observer.py): start-up and the steady rate
taken from the output count over time, on staircases like exactly-once's transactions."""

from __future__ import annotations

import os
import socket

from bench.observer import Series, listening_pids
from bench.report import Run


def staircase(startup: float, per_step: int, steps: int, interval: float = 1.0) -> Series:
    """A count that stays 0 until `startup`, then jumps by `per_step` every `interval`."""
    series = Series(started=100.0)
    series.note(100.0, 0)
    for k in range(steps):
        series.note(100.0 + startup + k * interval, (k + 1) * per_step)
    return series


def test_startup_is_the_first_output() -> None:
    assert staircase(7.5, 1000, 20).startup() == 7.5
    assert Series(started=0.0).startup() is None


def test_steady_rate_follows_a_staircase_mean_slope() -> None:
    """One jump of 5,000 a second for 40 s after a 10 s start-up: 5,000/s, within 3 %,
    where the end-to-end rate (start-up included) would say 4,000."""
    rate = staircase(10.0, 5000, 41).steady_rate(commit_interval=1.0)
    assert rate is not None
    assert abs(rate - 5000) / 5000 < 0.03


def test_steady_rate_ignores_a_slow_start_and_a_slow_tail() -> None:
    """A trickle right after the first output and a tail: the middle's slope is the fast part."""
    series = Series(started=0.0)
    t, count = 5.0, 0
    for _ in range(5):  # 1 s of trickle: 100 a step
        count += 100
        series.note(t, count)
        t += 0.2
    for _ in range(100):  # 20 s at 10,000/s
        count += 2000
        series.note(t, count)
        t += 0.2
    rate = series.steady_rate(commit_interval=1.0)
    assert rate is not None
    assert abs(rate - 10_000) / 10_000 < 0.05


def test_no_steady_rate_from_too_short_a_run() -> None:
    """A middle shorter than five commit intervals says nothing about steady state."""
    assert staircase(1.0, 50_000, 4).steady_rate(commit_interval=1.0) is None


def test_the_sampled_series_holds_the_count_each_second() -> None:
    assert staircase(2.0, 10, 3).sampled() == [
        (0.0, 0),
        (1.0, 0),
        (2.0, 10),
        (3.0, 20),
        (4.0, 30),
        (5.0, 30),
    ]


def test_latency_leaves_out_events_sent_before_the_first_answer() -> None:
    """Events queued while the system started (sent before its first answer) are not steady
    state: only the later ones count."""
    run = Run("s", "A", "paced", "exactly_once", 1)
    sent = [float(i) for i in range(100)]  # one event a second
    seen_at = {i: 50.0 if i < 50 else i + 0.5 for i in range(100)}  # the first 50 queued
    run.set_latency(sent, 1.0, seen_at)
    assert run.p99_ms is not None and run.p50_ms is not None
    assert run.max_ms == 500.0  # the 50 queued events (up to 50 s late) are left out


def test_the_broker_is_found_by_the_port_it_listens_on() -> None:
    """`listening_pids` finds the process listening on a bootstrap server's port (here this
    one), and nothing for a port no one listens on: the broker's CPU per event in
    `bench.compare` is read from the processes it returns."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert listening_pids(f"localhost:1,127.0.0.1:{port}") == [os.getpid()]
    assert listening_pids(f"127.0.0.1:{port}") == []
