"""Moved to `streamkit.clients` (below `state/` and `runtime/`); kept for the modules not yet
switched over (`streamkit/app.py`)."""

from streamkit.clients import (
    connection_options,
    make_admin,
    make_consumer,
    make_producer,
    make_raw_client,
)

__all__ = ["connection_options", "make_admin", "make_consumer", "make_producer", "make_raw_client"]
