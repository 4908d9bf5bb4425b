"""Test hooks: faults injected at named points of the checkpoint, for the crash tests.

`STREAMKIT_TEST_HOOK="crash-after-commit:3"` kills the process (SIGKILL, like `kill -9`) the
third time the point is reached; a point named `fail-...` raises `InjectedFault` instead;
one named `delay-...` (`delayed`) waits `DELAY` seconds. Several hooks are separated by
commas. Unset (always, outside tests), `reached` is one lookup.

Points: `crash-after-commit` (a stateful task's transaction committed with state changes,
its SQLite write not done yet),
`fail-before-commit` (a transaction's records and offsets sent, not committed yet),
`delay-after-revoke-close` and `crash-after-revoke-close` (a rebalance closed the revoked
tasks; their last checkpoint not begun).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

log = logging.getLogger(__name__)


class InjectedFault(Exception):
    """Raised by a `fail-...` test hook."""


def _parse(spec: str) -> dict[str, int]:
    hooks = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, nth = item.partition(":")
        hooks[name] = int(nth or "1")
    return hooks


DELAY = 1.0  # seconds a `delay-...` point waits

_HOOKS = _parse(os.environ.get("STREAMKIT_TEST_HOOK", ""))
_SEEN: dict[str, int] = {}


def reached(point: str) -> None:
    nth = _HOOKS.get(point)
    if nth is None:
        return
    seen = _SEEN[point] = _SEEN.get(point, 0) + 1
    if seen != nth:
        return
    log.warning("test hook: %s (time %d)", point, seen)
    if point.startswith("crash-"):
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)
    raise InjectedFault(f"test hook {point}")


async def delayed(point: str) -> None:
    """A `delay-...` point: wait `DELAY` seconds the nth time it is reached."""
    nth = _HOOKS.get(point)
    if nth is None:
        return
    seen = _SEEN[point] = _SEEN.get(point, 0) + 1
    if seen == nth:
        log.warning("test hook: %s (time %d)", point, seen)
        await asyncio.sleep(DELAY)
