"""Run a command beside a local server (`localkafka.py run -- CMD`, `localregistry run -- CMD`):
replace this process with it, or run it as a child that gets our SIGINT/SIGTERM, and make
SIGTERM unwind this process so that whatever it started gets stopped. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from types import FrameType


def exit_on(signum: int, _frame: FrameType | None) -> None:
    """A signal handler: raise SystemExit(128 + signum), which unwinds (finally blocks run)."""
    raise SystemExit(128 + signum)


def exec_command(command: list[str], env: dict[str, str]) -> int:
    """Replace this process with command; 127 if it cannot run."""
    try:
        os.execvpe(command[0], command, env)
    except OSError as exc:
        print(f"cannot run {command[0]}: {exc}", file=sys.stderr, flush=True)
        return 127


def run_child(command: list[str], env: dict[str, str]) -> int:
    """Run command, forwarding SIGINT/SIGTERM to it; its exit code (128+N if killed by N)."""
    try:
        child = subprocess.Popen(command, env=env)
    except OSError as exc:
        print(f"cannot run {command[0]}: {exc}", file=sys.stderr, flush=True)
        return 127

    def forward(signum: int, _frame: FrameType | None) -> None:
        with contextlib.suppress(OSError, ValueError):  # Ctrl-C reached the child already
            if signum == signal.SIGINT and os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp():
                return
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    code = child.wait()
    return code if code >= 0 else 128 - code
