"""The benchmark harness runs (tiny N) so it does not rot; its figures live in docs/."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.kafkahelp import ROOT


def test_passthrough_benchmark_smoke_run() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.passthrough", "--smoke"],
        capture_output=True,
        cwd=ROOT,
        env=dict(os.environ),
        timeout=240,
    )
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    assert "| streamkit | 1/1 |" in out
    assert "| streamkit + key_by hop | 1/1 |" in out
