"""The benchmark harnesses run (tiny N) so they do not rot; their figures live in docs/."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile

from bench.common import bootstrap
from bench.observer import listening_pids
from tests.kafkahelp import ROOT


def run_bench(*args: str) -> str:
    """`python -m bench.<args>`; its standard output, asserting it exited with 0. Its
    temporary folders (the peers' logs, state folders) go in one removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="bench-smoke-") as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", *args],
            capture_output=True,
            cwd=ROOT,
            env={**os.environ, "TMPDIR": tmp},
            timeout=240,
        )
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    return out


def test_passthrough_benchmark_smoke_run() -> None:
    out = run_bench("bench.passthrough", "--smoke")
    assert "| streamkit | 1/1 |" in out
    assert "| streamkit + key_by hop | 1/1 |" in out


def test_peers_benchmark_smoke_run() -> None:
    """Pipeline A in streamkit (both guarantees, one and two worker processes), the raw
    one-hop and two-hop aiokafka loops and the two-hop librdkafka loop (both guarantees:
    exactly N outputs under exactly-once), validated against the oracle (every output answers
    one input event), after the warm-up run, plus one paced latency run each; the other
    systems need the bench virtualenv and the JDK build (`make bench`). (B and C: the next
    test.)"""
    out = run_bench(
        "bench.compare",
        "--events",
        "600",
        "--reps",
        "1",
        "--pipelines",
        "A",
        "--systems",
        "streamkit,raw aiokafka,raw two-hop,raw two-hop rdkafka,streamkit x2",
        "--commit-interval",
        "0.2",
        "--guarantees",
        "exactly_once,at_least_once",
        "--paced-events",
        "300",
        "--paced-rate",
        "300",
        "--no-hardware",
    )
    assert "| exactly_once | streamkit | 1/1 |" in out
    assert "| at_least_once | streamkit | 1/1 |" in out
    assert "| at_least_once | raw aiokafka | 1/1 |" in out
    assert out.count("| at_least_once | raw two-hop | 1/1 |") == 2  # A and its latency run
    assert out.count("| exactly_once | raw two-hop rdkafka | 1/1 |") == 2
    assert out.count("| at_least_once | raw two-hop rdkafka | 1/1 |") == 2
    assert out.count("| exactly_once | streamkit x2 | 1/1 |") == 2
    assert out.count("| exactly_once | streamkit | 1/1 |") == 2  # A and its latency run
    # first, an unreported run over an input of its own (the broker's warm-up): the counts
    # above do not include it
    assert "0 streamkit A warm-up exactly_once: " in out
    assert "Failed runs" not in out
    if listening_pids(bootstrap()):  # the broker runs here: its CPU per event is reported
        assert re.search(r"streamkit A throughput exactly_once: .* \(broker \d+\.\d\)", out)


def test_window_and_join_pipelines_smoke_run() -> None:
    """Pipelines B (a count per user and tumbling minute) and C (clicks ⋈ purchases within 10
    minutes) in streamkit under exactly-once, validated against the oracle: every result
    (every pair) once, no other output."""
    out = run_bench(
        "bench.compare",
        "--events",
        "2000",
        "--reps",
        "1",
        "--pipelines",
        "B,C",
        "--systems",
        "streamkit",
        "--commit-interval",
        "0.2",
        "--guarantees",
        "exactly_once",
        "--no-hardware",
    )
    assert out.count("| exactly_once | streamkit | 1/1 |") == 2
    assert "Pipeline B, 10,000 keys, throughput" in out
    assert "Pipeline C, 10,000 keys, throughput" in out
    assert "Failed runs" not in out


def test_partitions_benchmark_smoke_run() -> None:
    """`bench.partitions` with its load in a process of its own: a backlog run, a paced run
    whose every total was read back (a latency per event), and the plain-aiokafka baseline
    committing the same paced transactions."""
    out = run_bench(
        "bench.partitions",
        "--events",
        "400",
        "--partitions",
        "4",
        "--modes",
        "per_worker",
        "--rate",
        "200",
        "--seconds",
        "2",
        "--raw",
    )
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [(r["partitions"], r["mode"]) for r in rows] == [
        (4, "per_worker"),
        (4, "raw transactions"),
    ]
    worker, raw = rows
    assert worker["events"] == 400 and worker["transactions"] >= 1
    assert worker["paced_p50_ms"] > 0 and worker["paced_p50_checkpoint_ms"] > 0
    assert raw["paced_transactions_per_s"] > 0 and raw["paced_p50_checkpoint_ms"] > 0


def test_transaction_ceiling_with_librdkafka_smoke_run() -> None:
    """`bench.txn_ceiling --client rdkafka`: the same paced transactions from librdkafka's
    producer, each committed (offsets included)."""
    out = run_bench(
        "bench.txn_ceiling",
        "--partitions",
        "4",
        "--rate",
        "200",
        "--seconds",
        "2",
        "--client",
        "rdkafka",
    )
    (row,) = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert row["mode"] == "raw transactions, librdkafka" and row["partitions"] == 4
    assert row["paced_transactions_per_s"] > 0 and row["paced_p50_checkpoint_ms"] > 0
