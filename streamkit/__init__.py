"""streamkit: asyncio stream processing for Apache Kafka."""

from streamkit.app import App, Producer
from streamkit.events import Event, Record
from streamkit.serde import DecodeError
from streamkit.settings import ConfigError, Settings
from streamkit.streams import Stream
from streamkit.topics import Topic

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
]
__version__ = "0.1.0"
