"""Protobuf in the Confluent wire format: the 5-byte header, the message-index list (which
message of the schema's file this is: `[0]`, the first top-level message, is the single byte
0; else the count then each index, zigzag varints), then the message's bytes.

    Protobuf(Order)                    # a generated message class (protoc's, or built at
                                       # run time); its .proto source is rendered from it
    Protobuf(Order, schema=proto_text) # the .proto source the user keeps

Values decode into the message class; writes take a message or a dict (`ParseDict`). The
official `protobuf` runtime (upb, C) parses and serializes. A record's index list must name
the declared message (the same path in its file): another is a dead letter that says so.
Imports other than Google's well-known types (schema references) are not supported yet.
"""

from __future__ import annotations

from typing import Any

from streamkit.registry.client import RegisteredSchema
from streamkit.registry.codec import HEADER, SchemaCodec
from streamkit.serde import DecodeError
from streamkit.settings import ConfigError

try:
    from google.protobuf import descriptor_pb2, json_format
    from google.protobuf.message import DecodeError as ProtoDecodeError
    from google.protobuf.message import Message
except ImportError:  # pragma: no cover - the registry extra is not installed
    Message = None  # type: ignore[assignment,misc]


def zigzag_varint(value: int) -> bytes:
    n = (value << 1) ^ (value >> 63)
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_zigzag_varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, next position); IndexError when the bytes end inside it."""
    shift = n = 0
    while True:
        byte = data[pos]
        pos += 1
        n |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (n >> 1) ^ -(n & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def message_indexes(indexes: list[int]) -> bytes:
    if indexes == [0]:
        return b"\0"
    return zigzag_varint(len(indexes)) + b"".join(zigzag_varint(i) for i in indexes)


def read_message_indexes(data: bytes, pos: int) -> tuple[list[int], int]:
    count, pos = read_zigzag_varint(data, pos)
    if count == 0:
        return [0], pos
    if not 0 < count <= 64:
        raise ValueError(f"message-index count {count}")
    indexes = []
    for _ in range(count):
        index, pos = read_zigzag_varint(data, pos)
        indexes.append(index)
    return indexes, pos


def _index_path(descriptor: Any) -> list[int]:
    """The message's path in its file: top-level index, then each nested index."""
    path = []
    while descriptor is not None:
        parent = descriptor.containing_type
        siblings = (
            parent.nested_types
            if parent is not None
            else descriptor.file.message_types_by_name.values()
        )
        path.append([s.full_name for s in siblings].index(descriptor.full_name))
        descriptor = parent
    return path[::-1]


class Protobuf(SchemaCodec):
    schema_type = "PROTOBUF"
    format_name = "Protobuf"

    def __init__(
        self,
        message: Any,
        *,
        schema: str | None = None,
        subject: str | None = None,
        register: bool = True,
    ) -> None:
        if Message is None:
            raise ConfigError(
                "Protobuf needs the registry extra: pip install 'streamkit[registry]'"
            )
        if not (isinstance(message, type) and issubclass(message, Message)):
            raise ConfigError(f"Protobuf(): give a generated message class, got {message!r}")
        descriptor = message.DESCRIPTOR
        super().__init__(subject=subject, register=register, what=descriptor.full_name)
        self.message = message
        self.indexes = _index_path(descriptor)
        if schema is None:
            from streamkit.registry.proto_text import proto_source  # needs protobuf

            file = descriptor_pb2.FileDescriptorProto()
            descriptor.file.CopyToProto(file)
            if file.syntax not in ("", "proto2", "proto3"):
                raise ConfigError(
                    f"Protobuf({descriptor.full_name}): a file of syntax {file.syntax!r} "
                    "(protobuf editions) cannot be rendered yet: pass its .proto source as "
                    "schema="
                )
            others = [d for d in file.dependency if not d.startswith("google/protobuf/")]
            if others:
                raise ConfigError(
                    f"Protobuf({descriptor.full_name}): its file imports {', '.join(others)}; "
                    "schema references are not supported yet: keep the types in one file"
                )
            schema = proto_source(file)
        self.text = schema
        self._parse = message.FromString

    def schema_text(self) -> str:
        return self.text

    def index_bytes(self) -> bytes:
        return message_indexes(self.indexes)

    def own_writer(self) -> Any:
        return self.indexes

    def parse_writer(self, registered: RegisteredSchema) -> Any:
        return self.indexes  # the writer's file is not compiled: its indexes must match ours

    def write(self, obj: Any) -> bytes:
        if isinstance(obj, dict):
            obj = json_format.ParseDict(obj, self.message())
        if not isinstance(obj, self.message):
            raise TypeError(f"Protobuf codec of {self.what} needs that message or a dict")
        return bytes(obj.SerializeToString())

    def read(self, writer: Any, schema_id: int, data: bytes) -> Any:
        try:
            indexes, pos = read_message_indexes(data, HEADER)
        except (IndexError, ValueError) as exc:
            raise DecodeError(
                f"Protobuf schema id {schema_id}: no valid message-index list after the "
                f"header ({type(exc).__name__}: {exc or 'the bytes end'})"
            ) from None
        if indexes != writer:
            raise DecodeError(
                f"Protobuf schema id {schema_id}: the record's message indexes {indexes} name "
                f"another message than {self.what} ({writer})"
            )
        try:
            return self._parse(data[pos:])
        except ProtoDecodeError as exc:
            raise DecodeError(
                f"bytes do not match Protobuf schema id {schema_id} ({self.what}): {exc}"
            ) from None
