"""What the three schema-registry codecs share: the Confluent wire format, the subject, the
registration at start and the writer schemas fetched by id.

The wire format: byte 0 is the magic byte 0, bytes 1-4 the schema id (big-endian), then the
payload (Protobuf puts its message-index list first). Subjects follow Confluent's default
TopicNameStrategy: `{topic}-key` and `{topic}-value`, unless the codec names one.

Start (`prepare_codecs`, run by the worker before it joins the group):
1. every topic's registry codecs are collected; without `schema_registry_url` that is a
   ConfigError naming the topic;
2. each codec registers its schema under its subject (or, declared `register=False`, looks it
   up): a schema the registry refuses (incompatible, invalid, not found) is a ConfigError with
   the registry's own message, so the worker fails at start; a registry that cannot be reached
   is tried 4 times over 3.5 s, then fails the start the same way;
3. the id becomes the 5-byte header of every record the codec writes.

Decoding reads the id, takes the writer's schema from the codec's cache or, the first time an
id is seen, from the registry (one blocking request, cached); a record that is not in the wire
format, names an unknown id or a schema of another format, or does not match its schema raises
DecodeError with that reason, and the stream sends it to the dead-letter topic.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from streamkit.registry.client import (
    RegisteredSchema,
    RegistryClient,
    RegistryError,
    RegistryUnavailable,
)
from streamkit.serde import DeclaredCodec, DecodeError
from streamkit.settings import ConfigError

MAGIC = 0
HEADER = 5  # magic byte + 4-byte schema id
START_RETRIES = (0.5, 1.0, 2.0)  # seconds between tries to reach the registry at start
_MISSING = object()


class RegistryStartError(ConfigError):
    """The registry could not be reached at start (after retries): the worker does not start."""


_MAX_UNKNOWN = 1000  # unknown ids remembered (their reason), so bad records cost no request


class SchemaCodec(DeclaredCodec):
    """Base of Avro, Protobuf and JsonSchema. A subclass gives its `schema_type`, its schema
    text (`schema_text`), how to read a writer's schema (`parse_writer`) and its payload
    (`read`, `write`)."""

    schema_type: ClassVar[str]  # AVRO, PROTOBUF, JSON: as the registry names it
    format_name: ClassVar[str]  # Avro, Protobuf, JSON Schema: as messages name it

    def __init__(self, *, subject: str | None, register: bool, what: str) -> None:
        self.subject = subject
        self.register = register
        self.what = what  # the declared type or schema, for messages
        self.topic: str | None = None
        self.part = "value"
        self.schema_id: int | None = None
        self.header = b""
        self.client: RegistryClient | None = None
        self._writers: dict[int, Any] = {}
        self._unknown: dict[int, str] = {}
        self.name = f"{self.format_name.lower().replace(' ', '')}:{what}"

    # -- declaration ---------------------------------------------------------------------------

    def bind(self, topic: str, part: str) -> SchemaCodec:
        mine = self.topic is None or (self.topic == topic and self.part == part)
        codec = self if mine else copy.copy(self)
        if codec is not self:  # its own caches: ids differ per subject
            codec._writers, codec._unknown = {}, {}
        codec.topic, codec.part = topic, part
        return codec

    @property
    def subject_name(self) -> str:
        if self.subject is not None:
            return self.subject
        if self.topic is None:
            raise ConfigError(
                f"{self.format_name} codec for {self.what}: declare it on a topic "
                "(app.topic(..., value_type=...)) or give it a subject="
            )
        return f"{self.topic}-{self.part}"

    @property
    def where(self) -> str:
        return f"topic {self.topic}: {self.part}" if self.topic else f"subject {self.subject}"

    def schema_text(self) -> str:
        raise NotImplementedError

    # -- start ---------------------------------------------------------------------------------

    def prepare(self, client: RegistryClient) -> int:
        """Register (or look up) the schema; the id every record written carries."""
        subject, text = self.subject_name, self.schema_text()
        try:
            if self.register:
                schema_id = client.register(subject, text, self.schema_type)
            else:
                schema_id = client.lookup(subject, text, self.schema_type)
        except RegistryError as exc:
            doing = "registering" if self.register else "looking up"
            hint = (
                " (register it, or declare register=True)"
                if not self.register and exc.status == 404
                else ""
            )
            raise ConfigError(
                f"{self.where} {self.format_name} schema {self.what}: the schema registry "
                f"refused {doing} it under subject {subject} (HTTP {exc.status}): "
                f"{exc.message}{hint}"
            ) from None
        except RegistryUnavailable as exc:
            raise RegistryStartError(
                f"{self.where} {self.format_name} schema {self.what}: {exc}; check "
                "schema_registry_url (STREAMKIT_SCHEMA_REGISTRY_URL)"
            ) from None
        self.client, self.schema_id = client, schema_id
        self.header = bytes([MAGIC]) + schema_id.to_bytes(4, "big") + self.index_bytes()
        self._writers[schema_id] = self.own_writer()
        return schema_id

    def index_bytes(self) -> bytes:
        """What follows the schema id before the payload (Protobuf's message indexes)."""
        return b""

    def own_writer(self) -> Any:
        """The writer-side view of this codec's own schema (records written by this app)."""
        raise NotImplementedError

    # -- records -------------------------------------------------------------------------------

    def encode(self, obj: Any) -> bytes:
        if not self.header:
            raise RuntimeError(
                f"{self.where} {self.format_name} codec {self.what} has no schema id yet: "
                "the worker registers it at start (streamkit.registry.prepare_codecs outside "
                "a worker)"
            )
        return self.header + self.write(obj)

    def decode(self, data: bytes) -> Any:
        if len(data) < HEADER:
            raise DecodeError(
                f"not in the schema registry's wire format: {len(data)} bytes, fewer than "
                "the 5-byte header (magic byte 0, schema id)"
            )
        if data[0] != MAGIC:
            raise DecodeError(
                f"not in the schema registry's wire format: magic byte {data[0]:#04x}, "
                "expected 0x00"
            )
        schema_id = int.from_bytes(data[1:HEADER], "big")
        writer = self._writers.get(schema_id, _MISSING)
        if writer is _MISSING:
            writer = self._fetch(schema_id)
        return self.read(writer, schema_id, data)

    @property
    def loads(self) -> Callable[[bytes], Any]:
        return self.decode

    def write(self, obj: Any) -> bytes:
        raise NotImplementedError

    def read(self, writer: Any, schema_id: int, data: bytes) -> Any:
        """The payload after the header, decoded; DecodeError when it does not match."""
        raise NotImplementedError

    def parse_writer(self, registered: RegisteredSchema) -> Any:
        """A writer's schema fetched by id, made ready for `read`; raises on a bad one."""
        raise NotImplementedError

    def _fetch(self, schema_id: int) -> Any:
        known = self._unknown.get(schema_id)
        if known is not None:
            raise DecodeError(known)
        if self.client is None:
            raise DecodeError(
                f"schema id {schema_id}: the codec was never prepared (no registry to ask)"
            )
        try:
            registered = self.client.schema(schema_id)
        except RegistryError as exc:
            if exc.status != 404:
                raise RegistryUnavailable(
                    f"schema id {schema_id}: the registry answered HTTP {exc.status}: {exc.message}"
                ) from None
            return self._refuse(schema_id, f"unknown schema id {schema_id}: {exc.message}")
        if registered.schema_type != self.schema_type:
            return self._refuse(
                schema_id,
                f"schema id {schema_id} is registered as {registered.schema_type}, not "
                f"{self.schema_type} ({self.where} is declared {self.format_name})",
            )
        try:
            writer = self.parse_writer(registered)
        except Exception as exc:
            return self._refuse(
                schema_id,
                f"schema id {schema_id} cannot be read as the writer of {self.what}: "
                f"{type(exc).__name__}: {exc}",
            )
        self._writers[schema_id] = writer
        return writer

    def _refuse(self, schema_id: int, reason: str) -> Any:
        if len(self._unknown) < _MAX_UNKNOWN:
            self._unknown[schema_id] = reason
        raise DecodeError(reason)


def registry_codecs(topics: Iterable[Any]) -> list[SchemaCodec]:
    """The registry codecs of these topics (keys and values), each once."""
    found: dict[int, SchemaCodec] = {}
    for topic in topics:
        for codec in (topic.key_codec, topic.value_codec):
            if isinstance(codec, SchemaCodec):
                found.setdefault(id(codec), codec)
    return list(found.values())


def connect_codecs(topics: Iterable[Any], url: str | None) -> None:
    """For tools that only read (`streamkit tail`, `dlq show`): the codecs fetch the writers'
    schemas by id from the registry, and register nothing."""
    if url is None:
        return
    client = RegistryClient(url)
    for codec in registry_codecs(topics):
        if codec.client is None:
            codec.client = client


def check_state_codecs(app: Any) -> None:
    """A registry codec declared on a table, global table or window rather than on a topic has
    no subject: refused at start. (A table read from a topic shares that topic's codec.)"""
    for kind, holders in (
        ("table", app.tables),
        ("global table", app.global_tables),
        ("window", app.windows),
    ):
        for name, holder in holders.items():
            for part in ("key", "value"):
                codec = getattr(holder, f"{part}_codec", None)
                if isinstance(codec, SchemaCodec) and codec.topic is None:
                    raise ConfigError(
                        f"{kind} {name}: {part}_type {codec.format_name}({codec.what}) is for "
                        "topics (its subject is the topic's): declare it on the topic the "
                        f"{kind} reads, or give the {kind} a plain type (JSON)"
                    )


def prepare_app_codecs(app: Any) -> list[SchemaCodec]:
    """The worker's start step: check the state declarations, then `prepare_codecs` on the
    app's topics with its `schema_registry_url`."""
    check_state_codecs(app)
    return prepare_codecs(app.topics.values(), app.settings.schema_registry_url)


def prepare_codecs(topics: Iterable[Any], url: str | None) -> list[SchemaCodec]:
    """Start steps 1-3 (module docstring): register or look up every registry codec's schema
    of these topics; ConfigError with the registry's message when one is refused."""
    codecs = registry_codecs(topics)
    if not codecs:
        return []
    if url is None:
        first = codecs[0]
        raise ConfigError(
            f"{first.where} is declared {first.format_name} ({first.what}): set "
            "schema_registry_url (STREAMKIT_SCHEMA_REGISTRY_URL) to the schema registry's URL"
        )
    client = RegistryClient(url)
    for codec in codecs:
        for pause in (*START_RETRIES, None):  # a registry restarting: a few tries, then fail
            try:
                codec.prepare(client)
                break
            except RegistryStartError:
                if pause is None:
                    raise
                time.sleep(pause)
    return codecs
