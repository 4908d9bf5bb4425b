"""A task's life: created, restoring its state, running, closing, closed; and the moves
allowed between them (`Task._set_status` refuses any other)."""

from __future__ import annotations

import enum


class TaskState(enum.Enum):
    CREATED = "created"
    RESTORING = "restoring"
    RUNNING = "running"
    CLOSING = "closing"
    CLOSED = "closed"


ALLOWED = {
    TaskState.CREATED: {TaskState.RESTORING, TaskState.CLOSED},
    TaskState.RESTORING: {TaskState.RUNNING, TaskState.CLOSING, TaskState.CLOSED},
    TaskState.RUNNING: {TaskState.CLOSING, TaskState.CLOSED},
    TaskState.CLOSING: {TaskState.CLOSED},
    TaskState.CLOSED: set(),
}
