"""The fan-out benchmark runs (tiny N) so it does not rot; its figures live in docs/."""

from __future__ import annotations

from tests.test_bench_smoke import run_bench


def test_fanout_benchmark_smoke_run() -> None:
    out = run_bench("bench.fanout", "--smoke")
    assert "| one app, three agents | 1/1 |" in out
    assert "| three apps, one agent each | 1/1 |" in out
    assert "three apps ÷ fan-out: CPU" in out
