"""Test hooks: faults injected at named points of the checkpoint, for the crash tests.

`STREAMKIT_TEST_HOOK="crash-after-commit:3"` kills the process (SIGKILL, like `kill -9`) the
third time the point is reached; a point named `fail-...` raises `InjectedFault` instead;
one named `delay-...` (`delayed`) waits `STREAMKIT_TEST_DELAY` seconds (1 by default). Several
hooks are separated by commas. `name:n@other` counts only the times reached after the hook
`other` fired (e.g. the first checkpoint after a delayed assignment). Unset (always, outside
tests), `reached` is one lookup.

Points: `crash-after-commit` (a stateful task's transaction committed with state changes,
its SQLite write not done yet),
`fail-before-commit` (a transaction's records and offsets sent, not committed yet) and
`crash-before-commit` (the same; at least once, also: the outputs flushed, the offsets not
committed),
`delay-checkpoint-paused` (an exactly-once checkpoint's tasks paused, nothing snapshotted
yet: a task slow to reach its event boundary),
`crash-after-checkpoint` (an exactly-once checkpoint's transactions committed, its store
writes not begun),
`delay-after-revoke-close` and `crash-after-revoke-close` (a rebalance closed the revoked
tasks; their last checkpoint not begun),
`delay-start-beside` (exactly-once: an assignment's tasks about to start beside running
ones, between two checkpoints: no checkpoint runs meanwhile),
`delay-stop-closed` and `crash-stop-closed` (the stop closed every task; the final
checkpoint not begun), `crash-stop-committed` (the final checkpoint committed; producers not
closed, the group not left), `crash-stop-left` (the group left, the producer not stopped).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal

log = logging.getLogger(__name__)


class InjectedFault(Exception):
    """Raised by a `fail-...` test hook."""


def _parse(spec: str) -> dict[str, tuple[int, str]]:
    """name → (the nth time it fires, the hook that must have fired before it is counted)."""
    hooks = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, rest = item.partition(":")
        nth, _, after = rest.partition("@")
        hooks[name] = (int(nth or "1"), after)
    return hooks


DELAY = float(os.environ.get("STREAMKIT_TEST_DELAY", "1.0"))  # seconds a `delay-...` waits

_HOOKS = _parse(os.environ.get("STREAMKIT_TEST_HOOK", ""))
_SEEN: dict[str, int] = {}
_FIRED: set[str] = set()


def _fires(point: str) -> bool:
    """Count this time `point` is reached: whether it is the one its hook names."""
    hook = _HOOKS.get(point)
    if hook is None:
        return False
    nth, after = hook
    if after and after not in _FIRED:
        return False
    seen = _SEEN[point] = _SEEN.get(point, 0) + 1
    if seen != nth:
        return False
    _FIRED.add(point)
    log.warning("test hook: %s (time %d)", point, seen)
    return True


def reached(point: str) -> None:
    if point not in _HOOKS or not _fires(point):
        return
    if point.startswith("crash-"):
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)
    raise InjectedFault(f"test hook {point}")


async def delayed(point: str) -> None:
    """A `delay-...` point: wait `DELAY` seconds the nth time it is reached."""
    if point in _HOOKS and _fires(point):
        await asyncio.sleep(DELAY)
