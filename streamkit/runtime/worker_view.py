"""What the worker's HTTP server and metrics read of a running worker (`runtime/worker.py`).
A protocol, so that the worker can start them without a cycle in the imports."""

from __future__ import annotations

from typing import Any, Protocol

from streamkit.app import App
from streamkit.runtime.task_manager import TaskManager
from streamkit.settings import Settings


class WorkerView(Protocol):
    app: App
    settings: Settings
    client_id: str
    tasks: TaskManager | None
    checkpointer: Any  # Checkpointer | TransactionalCheckpointer | None
    assignor: Any  # StreamkitAssignor | None
    consumer: Any
    fetch: Any  # RawFetch | None (None: the consumer's fetch path)
    standbys: Any
    global_tables: Any

    @property
    def stopping(self) -> bool: ...
