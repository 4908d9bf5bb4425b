"""Log filters that keep a healthy start quiet.

On the first start against a fresh broker (no `__consumer_offsets` topic yet) aiokafka logs
`ERROR ... Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError`
while the broker creates the topic, then retries and succeeds. `CoordinatorLookupFilter`
drops that line (only retriable "not available" / "not ready" coordinator errors) for
GRACE seconds after it is first seen; if the coordinator is still missing after that, the
line is shown again, as a WARNING, since aiokafka keeps retrying on its own.

During a rebalance (every cooperative one has two rounds, and partitions that stay keep
committing through it), an offset commit made with the generation the group just left is
refused, and aiokafka logs `ERROR ... OffsetCommit failed for group ... (IllegalGenerationError
| RebalanceInProgressError), will rejoin`. The checkpoint says so itself ("checkpoint not
committed, group rebalanced") and the next one commits: `CommitInRebalanceFilter` shows
aiokafka's line as a WARNING.
"""

from __future__ import annotations

import logging
import time

GRACE = 60.0
COORDINATOR_LOGGER = "aiokafka.consumer.group_coordinator"
RETRIABLE = ("GroupCoordinatorNotAvailable", "CoordinatorNotAvailable", "NotCoordinator")
IN_REBALANCE = ("IllegalGenerationError", "RebalanceInProgressError")


class CoordinatorLookupFilter(logging.Filter):
    def __init__(self, grace: float = GRACE) -> None:
        super().__init__()
        self.grace = grace
        self._first: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.getMessage().startswith("Group Coordinator Request failed"):
            return True
        if not any(name in record.getMessage() for name in RETRIABLE):
            return True
        now = time.monotonic()
        if self._first is None:
            self._first = now
        if now - self._first < self.grace:
            return False
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class CommitInRebalanceFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("OffsetCommit failed for group") and any(
            name in message for name in IN_REBALANCE
        ):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def install() -> None:
    """Add the filters once to aiokafka's group coordinator logger."""
    logger = logging.getLogger(COORDINATOR_LOGGER)
    for kind in (CoordinatorLookupFilter, CommitInRebalanceFilter):
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())
