"""streamkit: asyncio stream processing for Apache Kafka."""

from streamkit.app import App, Producer
from streamkit.events import Event, Record
from streamkit.eventtime import processing_time
from streamkit.serde import DecodeError
from streamkit.settings import ConfigError, Settings
from streamkit.state.window_table import WindowTable
from streamkit.streams import Stream
from streamkit.topics import Topic
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
    "App",
    "ConfigError",
    "DecodeError",
    "Event",
    "Producer",
    "Record",
    "Settings",
    "Stream",
    "Topic",
    "WindowTable",
    "count",
    "hopping",
    "max_of",
    "merge_top",
    "min_of",
    "processing_time",
    "reduce",
    "session",
    "sliding",
    "sum_of",
    "top_k",
    "tumbling",
]
__version__ = "0.1.0"
