"""Failures that are not an event's fault: the worker stops (the event is read again by the
next owner of its partition), where an event's own failure becomes a dead letter."""

from __future__ import annotations

from streamkit.registry.client import RegistryUnavailable
from streamkit.runtime.collector import ProduceFailed
from streamkit.state.ownership import TableNotBound


class AgentStopped(Exception):
    """Agent code raised and `on_agent_error="stop"`: the worker must stop."""


# RegistryUnavailable: a record names a schema id not seen yet and the schema registry does not
# answer; the record is not at fault, so it is read again rather than dead-lettered.
FATAL = (TableNotBound, AgentStopped, ProduceFailed, RegistryUnavailable)
