"""A closed task's last transaction readable to its next owner's restore (one producer per
worker).

The next owner of a partition restores its tables from their changelog partitions up to their
last stable offset (`state/changelog.py`, step 3). A transaction the group has committed is
below that offset only once the transaction coordinator wrote its commit marker there, which
it does after the commit returned and partition by partition (one request per broker): the
marker on the group's offsets (what the next owner's committed offset waits for, with
`require_stable`) can come before the one on a changelog partition. Read in between, the
changelog would end before the transaction's records while the offsets already count them:
the next owner would run on state that misses them.

With one producer per partition, the next owner's `InitProducerId` waits for every marker of
the previous transaction of that id. With one producer per worker it has another id, so the
worker that lets a partition go waits here instead: after the checkpoint that committed its
closed task for the last time (a revoke's, the stop's), until the last stable offset of each
changelog partition it wrote to is past what it wrote (`await_markers`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from aiokafka.structs import TopicPartition

log = logging.getLogger(__name__)

MARKERS_TIMEOUT = 10.0  # seconds a closed task's last transaction may take to become readable
StableEnds = Callable[[list[TopicPartition]], Awaitable[dict[TopicPartition, int]]]


async def await_markers(
    stable_ends: StableEnds, written: Mapping[TopicPartition, int], patience: float
) -> bool:
    """Wait until every partition's last stable offset (`stable_ends`) is past the offset its
    committed transaction wrote last (`written`): its commit marker is there. False if some
    are not after `patience` seconds, or the offsets cannot be read (logged: the caller goes
    on; its transaction committed)."""
    waiting = dict(written)
    deadline = time.monotonic() + patience
    pause = 0.005
    while waiting:
        try:
            left = max(deadline - time.monotonic(), 0.1)
            stable = await asyncio.wait_for(stable_ends(list(waiting)), left)
        except Exception as exc:  # the transaction committed: the worker goes on regardless
            log.warning("could not read the last stable offsets of %s: %s", sorted(waiting), exc)
            return False
        waiting = {tp: at for tp, at in waiting.items() if stable.get(tp, -1) <= at}
        if not waiting:
            break
        if time.monotonic() >= deadline:
            log.warning(
                "the commit markers of %s not written after %.0fs: their next owner may "
                "restore without the last transaction", sorted(waiting), patience
            )  # fmt: skip
            return False
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.2)
    return True
