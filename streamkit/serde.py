"""Codecs: how keys and values become bytes and back.

A codec is chosen by the *type* a topic declares, never by a string:

- `bytes` → raw (the bytes as they are), `str` → UTF-8;
- `None` (nothing declared), `Any` or `object` → JSON via orjson, not validated;
- a pydantic model → JSON validated into the model (pydantic's parser, one pass);
- any other type pydantic can validate (a dataclass, a `typing_extensions.TypedDict`,
  `list[int]`, `dict[str, float]`, `int | None`, `datetime`, an enum, ...) → JSON validated
  with a `pydantic.TypeAdapter` built once per codec, and encoded through the same adapter.

A type pydantic cannot validate from JSON is refused with a `ConfigError` when the codec is
made (at declaration). A failure to decode raises `DecodeError`, which the stream turns into a
dead letter with the reason.

Keys default to `str` everywhere (topics, `key_by`, tables, windows); `key_type=bytes` takes
them as they are. Values default to plain JSON.
"""

from __future__ import annotations

import functools
import types
import warnings
from collections.abc import Callable
from typing import (
    Annotated,
    Any,
    Generic,
    Literal,
    Protocol,
    TypeVar,
    Union,
    get_args,
    get_origin,
)

import orjson
from pydantic import BaseModel, PydanticUserError, TypeAdapter, ValidationError
from pydantic.errors import PydanticInvalidForJsonSchema, PydanticSchemaGenerationError
from pydantic.json_schema import PydanticJsonSchemaWarning

from streamkit.settings import ConfigError

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


class DeclaredCodec:
    """A codec declared in place of a type: `value_type=Avro(Order)` (streamkit/registry).
    `codec_for` uses it as it is; a topic binds it to its name and part (`key`/`value`), and
    the worker prepares it at start (`prepare`: register or look up its schema)."""

    name = "declared"

    def bind(self, topic: str, part: str) -> DeclaredCodec:
        """The codec for `part` of `topic` (this one, or a copy when bound elsewhere)."""
        return self


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

    def encode(self, obj: str | bytes) -> bytes:
        if isinstance(obj, str):
            return obj.encode()
        if isinstance(obj, bytes | bytearray | memoryview):
            return bytes(obj)  # already encoded (a key passed on as it came)
        return str(obj).encode()

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
            raise DecodeError(f"invalid {self.model.__name__}: {describe(exc)}") from None
        except Exception as exc:  # a validator of the model raised something else
            raise DecodeError(
                f"invalid {self.model.__name__}: {type(exc).__name__}: {exc}"
            ) from None

    @property
    def loads(self) -> Callable[[bytes], M]:
        return self.model.model_validate_json


class TypedCodec(Generic[T]):
    """JSON validated into any type pydantic can validate that is not a model: a dataclass,
    a TypedDict, `list[int]`, `dict[str, float]`, a union, `int`, `datetime`... The adapter
    is built once, here; the hot path calls its bound `validate_json` (pydantic's Rust parser,
    one pass) and `dump_json`."""

    def __init__(self, declared: Any, adapter: TypeAdapter[T]) -> None:
        self.declared = declared
        self.adapter = adapter
        self.type_name = type_name(declared)
        self.name = f"typed:{self.type_name}"
        self._dump_json = adapter.dump_json
        self._validate_json = adapter.validate_json

    def encode(self, obj: T | Any) -> bytes:
        # A value of another shape (a dict for a dataclass topic) is written as JSON by
        # pydantic's inference, without the "unexpected value" warning: its readers validate.
        return self._dump_json(obj, warnings=False)

    def decode(self, data: bytes) -> T:
        try:
            return self._validate_json(data)
        except ValidationError as exc:
            raise DecodeError(f"invalid {self.type_name}: {describe(exc)}") from None
        except Exception as exc:  # a validator of the type raised something else
            raise DecodeError(f"invalid {self.type_name}: {type(exc).__name__}: {exc}") from None

    @property
    def loads(self) -> Callable[[bytes], T]:
        return self._validate_json


def same_bytes(given: Codec[Any], wanted: Codec[Any]) -> bool:
    """Whether a key or value written by `given` is already what `wanted` would write for it,
    so an output may keep the input record's bytes (no decode and encode per event): the same
    codec, text and raw bytes (the same bytes either way), plain JSON, or JSON validated into
    the same type. A schema-registry codec of another topic (its own subject and schema id)
    is not: the key or value is encoded again with the output's codec, as Kafka Streams'
    serdes do."""
    if given is wanted:
        return True
    plain = (RawCodec, StrCodec)
    if isinstance(given, plain) and isinstance(wanted, plain):
        return True
    if type(given) is not type(wanted):
        return False
    if isinstance(given, JsonCodec):
        return True
    if isinstance(given, ModelCodec) and isinstance(wanted, ModelCodec):
        return given.model is wanted.model
    if isinstance(given, TypedCodec) and isinstance(wanted, TypedCodec):
        return bool(given.declared == wanted.declared)
    return False


_dumps_json = functools.partial(orjson.dumps, default=_json_default)


def _dumps_str(obj: Any) -> bytes:
    if type(obj) is str:
        return obj.encode()
    return _STR.encode(obj)


_STR = StrCodec()


def dumps(codec: Codec[Any]) -> Callable[[Any], bytes]:
    """The bare encoding function of `codec`, for the hot path (as `loads` decodes): plain
    JSON is orjson itself (a C call, no Python frame), str a shortcut for str values, any other
    codec its own `encode`."""
    if type(codec) is JsonCodec:
        return _dumps_json
    if type(codec) is StrCodec:
        return _dumps_str
    return codec.encode


def describe(exc: ValidationError, limit: int = 5) -> str:
    """pydantic's errors on one line: `items[2].price: Input should be a valid number (got
    'abc')`; at most `limit` of them, then how many more."""
    errors = exc.errors(include_url=False)
    parts = []
    for err in errors[:limit]:
        where = ""
        for step in err["loc"]:
            where += f"[{step}]" if isinstance(step, int) else f".{step}" if where else str(step)
        text = f"{where or 'value'}: {err['msg']}"
        given = err.get("input")
        if err["type"] != "missing" and isinstance(given, str | int | float | bool):
            shown = repr(given)
            text += f" (got {shown[:40]}{'...' if len(shown) > 40 else ''})"
        parts.append(text)
    if len(errors) > limit:
        parts.append(f"and {len(errors) - limit} more")
    return "; ".join(parts)


def type_name(declared: Any) -> str:
    """`Order`, `list[int]`, `int | None`: how a declared type reads in a message (no module
    paths)."""
    if declared is None or declared is type(None):
        return "None"
    if declared is Ellipsis:
        return "..."
    if isinstance(declared, list):  # the parameters of a Callable
        return f"[{', '.join(type_name(a) for a in declared)}]"
    origin, args = get_origin(declared), get_args(declared)
    if origin is Union or origin is types.UnionType:
        return " | ".join(type_name(a) for a in args)
    if origin is Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin is Annotated:
        return type_name(args[0])
    if origin is not None:
        base = getattr(origin, "__name__", None) or repr(origin).replace("typing.", "")
        return f"{base}[{', '.join(type_name(a) for a in args)}]" if args else base
    if isinstance(declared, type):
        return declared.__name__
    return repr(declared).replace("typing.", "").replace("typing_extensions.", "")


RAW = RawCodec()
STR = StrCodec()
JSON = JsonCodec()


def decode_problem(key_codec: Codec[Any], value_codec: Codec[Any], rec: Any) -> str:
    """The codecs' own explanation of why a record's key or value does not decode (the
    reason a dead letter carries). A key's problem says it is the key's."""
    for part, codec, raw in (("key", key_codec, rec.key), ("value", value_codec, rec.value)):
        if raw is None:
            continue
        try:
            codec.decode(raw)
            continue
        except DecodeError as exc:
            reason = str(exc)
        except Exception as exc:  # a codec that raised something else
            reason = f"{type(exc).__name__}: {exc}"
        if part == "key":
            hint = " (keys are str unless declared: key_type=bytes takes any bytes)"
            return f"key: {reason}{hint if codec is STR else ''}"
        return reason
    return "does not decode"


# Declared types that mean "JSON, whatever it holds": no validation, orjson both ways.
_PLAIN_JSON: tuple[Any, ...] = (None, Any, object)

_WHAT_INSTEAD = (
    "declare a pydantic model, a dataclass or a TypedDict (typing_extensions.TypedDict before "
    "Python 3.12) of JSON fields, a type such as list[int] or dict[str, float], no type for "
    "plain JSON, or bytes for the bytes as they are"
)


def codec_for(declared: Any, what: str = "type") -> Codec[Any]:
    """The codec for a declared key/value type. `what` names the declaration in a refusal
    (`topic orders: value_type`). Raises ConfigError for a type pydantic cannot validate
    from JSON."""
    if isinstance(declared, DeclaredCodec):
        return declared  # type: ignore[return-value]  # each subclass is a Codec
    if declared is bytes:
        return RAW
    if declared is str:
        return STR
    if any(declared is plain for plain in _PLAIN_JSON):
        return JSON
    if (
        isinstance(declared, type)
        and get_origin(declared) is None
        and issubclass(declared, BaseModel)
    ):
        return ModelCodec(declared)
    return TypedCodec(declared, _adapter(declared, what))


def _adapter(declared: Any, what: str) -> TypeAdapter[Any]:
    name = type_name(declared)
    instead = _WHAT_INSTEAD
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(declared)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PydanticJsonSchemaWarning)
            adapter.json_schema(mode="validation")  # builds a deferred schema, too
    except PydanticSchemaGenerationError:
        problem = "cannot be validated: pydantic has no schema for it"
    except PydanticInvalidForJsonSchema as exc:
        problem = f"cannot come from JSON ({_first_line(exc)})"
    except (PydanticUserError, NameError, TypeError) as exc:
        if getattr(exc, "code", None) in ("class-not-fully-defined", "undefined-annotation"):
            problem = (
                "cannot be validated: it refers to a type that is not defined where it is "
                "declared (a name in quotes, or a class defined inside a function)"
            )
            instead = "define every type it uses at module level, before the declaration"
        else:
            problem = f"cannot be validated: {_first_line(exc)}"
    else:
        return adapter
    raise ConfigError(f"{what} {name} {problem}; {instead}")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].rstrip(".") if text else type(exc).__name__
