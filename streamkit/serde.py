"""Codecs: how keys and values become bytes and back.

A codec is chosen by the *type* a topic declares, never by a string:
`bytes` → raw, `str` → UTF-8, a pydantic model → JSON validated into the model,
anything else (`dict`, `list`, `None`, `Any`, int, float) → JSON via orjson.
A failure to decode raises `DecodeError`, which the stream turns into a dead letter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class DecodeError(Exception):
    """Bytes that do not decode or validate into the declared type."""


class Codec(Protocol[T]):
    name: str

    def encode(self, obj: T) -> bytes: ...

    def decode(self, data: bytes) -> T:
        """Decode or raise DecodeError with a readable reason."""

    @property
    def loads(self) -> Callable[[bytes], T]:
        """The bare decoding function for the hot path: it raises ValueError on bad input
        (then call `decode` for the reason)."""


class RawCodec:
    name = "raw"

    def encode(self, obj: bytes | str) -> bytes:
        if isinstance(obj, str):
            return obj.encode()
        if not isinstance(obj, bytes | bytearray | memoryview):
            raise TypeError(f"raw codec needs bytes or str, got {type(obj).__name__}")
        return bytes(obj)

    def decode(self, data: bytes) -> bytes:
        return data

    @property
    def loads(self) -> Callable[[bytes], bytes]:
        return bytes


class StrCodec:
    name = "str"

    def encode(self, obj: str) -> bytes:
        return obj.encode() if isinstance(obj, str) else str(obj).encode()

    def decode(self, data: bytes) -> str:
        try:
            return data.decode()
        except UnicodeDecodeError as exc:
            raise DecodeError(f"not UTF-8: {exc}") from None

    @property
    def loads(self) -> Callable[[bytes], str]:
        return bytes.decode


def _json_default(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


class JsonCodec:
    name = "json"

    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(obj, default=_json_default)

    def decode(self, data: bytes) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"invalid JSON: {exc}") from None

    @property
    def loads(self) -> Callable[[bytes], Any]:
        return orjson.loads


class ModelCodec(Generic[M]):
    """JSON validated into a pydantic model (pydantic's Rust parser: one pass, no dict)."""

    name = "model"

    def __init__(self, model: type[M]) -> None:
        self.model = model
        self.name = f"model:{model.__name__}"

    def encode(self, obj: M | Any) -> bytes:
        if isinstance(obj, BaseModel):
            return obj.__pydantic_serializer__.to_json(obj)
        return orjson.dumps(obj, default=_json_default)

    def decode(self, data: bytes) -> M:
        try:
            return self.model.model_validate_json(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}"
                for e in exc.errors()[:5]
            )
            raise DecodeError(f"invalid {self.model.__name__}: {problems}") from None
        except Exception as exc:  # a validator of the model raised something else
            raise DecodeError(
                f"invalid {self.model.__name__}: {type(exc).__name__}: {exc}"
            ) from None

    @property
    def loads(self) -> Callable[[bytes], M]:
        return self.model.model_validate_json


RAW = RawCodec()
STR = StrCodec()
JSON = JsonCodec()


def decode_problem(key_codec: Codec[Any], value_codec: Codec[Any], rec: Any) -> str:
    """The codecs' own explanation of why a record's key or value does not decode."""
    try:
        for codec, raw in ((key_codec, rec.key), (value_codec, rec.value)):
            if raw is not None:
                codec.decode(raw)
    except DecodeError as exc:
        return str(exc)
    except Exception as exc:  # a codec that raised something else
        return f"{type(exc).__name__}: {exc}"
    return "does not decode"


def codec_for(declared: Any) -> Codec[Any]:
    """The codec for a declared key/value type."""
    if declared is bytes:
        return RAW
    if declared is str:
        return STR
    if isinstance(declared, type) and issubclass(declared, BaseModel):
        return ModelCodec(declared)
    return JSON
