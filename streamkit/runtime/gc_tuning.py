"""Python's cyclic garbage collector while workers run.

With Python's default thresholds a worker spends ~10 % of its CPU in the collector (pipeline A,
1,000,000 events: 23 full collections of ~50 ms each, ~2,800 young ones) and frees almost
nothing: the hot path's garbage (decoded values, records, batches) dies by reference count.
Two changes take that to ~1 % (docs/benchmarks.md, "Python's garbage collector while a
worker runs"):

1. the objects that exist once the worker started (modules, the app, clients) are frozen out of
   the collector's view (`gc.freeze`): a full collection then walks only what came after;
2. the young generation is collected after `gc_threshold` net allocations instead of 700, so a
   steady stream of events, whose objects are freed as fast as they are made, rarely triggers one.

Cyclic garbage is still collected, only less often. The last worker of the process to stop
puts Python's settings back (workers may share a process: tests, embedded use).
"""

from __future__ import annotations

import gc

_running = 0  # workers of this process that tuned the collector
_saved: tuple[int, int, int] | None = None


def tune(threshold: int) -> bool:
    """A worker started (threshold 0: leave the collector as it is). True: call `restore`
    when it stops."""
    global _running, _saved
    if threshold <= 0:
        return False
    _running += 1
    if _running == 1:
        _saved = gc.get_threshold()
    # (no collection first: in a big process, a test run's, it would cost more than the
    # little start-up garbage this leaves frozen until `restore`)
    gc.freeze()
    young, older, oldest = gc.get_threshold()
    gc.set_threshold(max(threshold, young), older, oldest)
    return True


def restore() -> None:
    """A worker whose `tune` said True stopped."""
    global _running, _saved
    _running -= 1
    if _running == 0 and _saved is not None:
        gc.set_threshold(*_saved)
        _saved = None
        gc.unfreeze()
