"""`make demo` in its short form: the e-commerce pipeline on the broker, two worker processes
(one killed with SIGKILL midway, a replacement started), and its own checks against the
generator's oracle (spend per user, sessions, DLQ, late events, enriched count, the local
sink, top-k per window, the fraud rule's alerts, clean stops). The demo exits 0 only if
every check passes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.kafkahelp import ROOT


@pytest.mark.slow
def test_the_demo_passes_its_checks(tmp_path: object) -> None:
    env = {**os.environ, "ECOM_LOGS": str(tmp_path), "COLUMNS": "120"}
    done = subprocess.run(
        [sys.executable, "-m", "apps.ecommerce", "--short"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=240,
    )
    out = done.stdout.decode(errors="replace") + done.stderr.decode(errors="replace")
    assert done.returncode == 0, out
    assert "FAIL" not in out, out
    assert out.count("PASS ") == 12, out
    assert "PASS conversions (view ⋈ purchase within 30 min, left join)" in out
    assert "All checks passed." in out
    assert "worker-2 killed with SIGKILL" in out
