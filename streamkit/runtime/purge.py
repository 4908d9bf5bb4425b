"""Deleting what every reader of a repartition topic has committed (`DeleteRecords`).

Repartition topics keep no time retention (their record timestamps are event times, which may
be long past: time retention would delete records before the next stage reads them). So, as
Kafka Streams does, the worker deletes the records of the repartition partitions its tasks
read up to the offsets its last checkpoint committed: under exactly-once those are final, and
a restart resumes from them. At most every `every` seconds, after a checkpoint; a failure is
logged and retried later, never fatal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from aiokafka.admin import RecordsToDelete
from aiokafka.structs import TopicPartition

from streamkit.clients import make_admin
from streamkit.settings import Settings

log = logging.getLogger(__name__)

PURGE_EVERY = 30.0  # seconds


class RepartitionPurger:
    def __init__(
        self, settings: Settings, client_id: str, topics: set[str], every: float = PURGE_EVERY
    ) -> None:
        self._settings = settings
        self._client_id = client_id
        self._topics = topics  # the app's repartition topics
        self._every = every
        self._last = time.monotonic()
        self._done: dict[TopicPartition, int] = {}  # deleted up to, per partition
        self._admin: Any = None
        self.deleted_partitions = 0

    async def after_checkpoint(self, committed: Mapping[TopicPartition, int]) -> None:
        """Delete up to the committed offsets, if `every` seconds have passed."""
        if not self._topics or time.monotonic() - self._last < self._every:
            return
        self._last = time.monotonic()
        wanted = {
            tp: offset
            for tp, offset in committed.items()
            if tp.topic in self._topics and offset > self._done.get(tp, 0)
        }
        if not wanted:
            return
        try:
            if self._admin is None:
                self._admin = make_admin(self._settings, f"{self._client_id}-purge")
                await self._admin.start()
            await self._admin.delete_records(
                {tp: RecordsToDelete(before_offset=offset) for tp, offset in wanted.items()}
            )
        except Exception as exc:  # the next round tries again; nothing is lost meanwhile
            log.warning("repartition purge failed (retried later): %s: %s", type(exc).__name__, exc)
            return
        self._done.update(wanted)
        self.deleted_partitions += len(wanted)
        log.debug("purged %d repartition partitions", len(wanted))

    async def close(self) -> None:
        if self._admin is not None:
            admin, self._admin = self._admin, None
            await admin.close()
