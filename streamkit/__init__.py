"""streamkit: asyncio stream processing for Apache Kafka."""

from streamkit.agents import Agent
from streamkit.aggregations import aggregate, aggregator, collect, first_of, last_of, mean_of
from streamkit.app import App
from streamkit.context import current_event
from streamkit.count_windows import sliding_count, tumbling_count
from streamkit.events import Event, Record
from streamkit.eventtime import processing_time
from streamkit.producer import Producer
from streamkit.serde import DecodeError
from streamkit.settings import ConfigError, Settings
from streamkit.sinks import JsonLinesSink, PostgresSink, SqliteSink
from streamkit.state.global_table import GlobalTable
from streamkit.state.ownership import KeyNotInPartition, TableNotBound
from streamkit.state.table import Table
from streamkit.state.timers import Timers
from streamkit.state.versioned_table import VersionedTable
from streamkit.state.window_table import WindowTable
from streamkit.streams import Stream
from streamkit.topics import Topic
from streamkit.versions import Versioned
from streamkit.windows import (
    count,
    hopping,
    max_of,
    merge_top,
    min_of,
    reduce,
    session,
    sliding,
    sum_of,
    top_k,
    tumbling,
)

__all__ = [
    "Agent",
    "App",
    "ConfigError",
    "DecodeError",
    "Event",
    "GlobalTable",
    "JsonLinesSink",
    "KeyNotInPartition",
    "PostgresSink",
    "Producer",
    "Record",
    "Settings",
    "SqliteSink",
    "Stream",
    "Table",
    "TableNotBound",
    "Timers",
    "Topic",
    "Versioned",
    "VersionedTable",
    "WindowTable",
    "aggregate",
    "aggregator",
    "collect",
    "count",
    "current_event",
    "first_of",
    "hopping",
    "last_of",
    "max_of",
    "mean_of",
    "merge_top",
    "min_of",
    "processing_time",
    "reduce",
    "session",
    "sliding",
    "sliding_count",
    "sum_of",
    "top_k",
    "tumbling",
    "tumbling_count",
]
__version__ = "0.1.0"
