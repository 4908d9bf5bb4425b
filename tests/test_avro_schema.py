"""The Avro schema derived from Python types (streamkit/registry/avro_schema.py), no registry:
for generated values of declared types, fastavro accepts the schema, validates the value
against it, and reads back what it wrote (the oracle: the value itself, through pydantic)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import io
import uuid
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter

from streamkit.registry import avro_schema
from streamkit.settings import ConfigError


class Size(enum.StrEnum):
    small = "small"
    large = "large"


class Part(BaseModel):
    sku: str
    weight: float


@dataclasses.dataclass
class Stamp:
    at: dt.datetime
    day: dt.date


class Shipment(BaseModel):
    id: int
    ok: bool
    ref: uuid.UUID
    blob: bytes
    size: Size = Size.small
    parts: list[Part] = []
    counts: dict[str, int] = {}
    stamp: Stamp | None = None
    note: str | None = None
    alt: int | str = 0
    spare: Part | None = None  # Part again: referred to by name


TIMES = st.datetimes(
    min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(dt.UTC)
)
PARTS = st.builds(Part, sku=st.text(max_size=5), weight=st.floats(allow_nan=False))
SHIPMENTS = st.builds(
    Shipment,
    id=st.integers(-(2**63), 2**63 - 1),
    ref=st.uuids(),
    blob=st.binary(max_size=8),
    parts=st.lists(PARTS, max_size=3),
    counts=st.dictionaries(st.text(max_size=3), st.integers(-(2**63), 2**63 - 1), max_size=3),
    stamp=st.none() | st.builds(Stamp, at=TIMES, day=st.dates()),
    note=st.none() | st.text(max_size=5),
    alt=st.integers(-5, 5) | st.text(max_size=3),
    spare=st.none() | PARTS,
)


def round_trip(declared: Any, value: Any) -> Any:
    schema = fastavro.parse_schema(avro_schema(declared))
    adapter: TypeAdapter[Any] = TypeAdapter(declared)
    datum = adapter.dump_python(value)
    assert fastavro.validation.validate(datum, schema, raise_errors=True)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, datum)
    out.seek(0)
    return adapter.validate_python(fastavro.schemaless_reader(out, schema, None))


@settings(max_examples=150, deadline=None)
@given(SHIPMENTS)
def test_a_models_derived_schema_writes_and_reads_its_values(shipment: Shipment) -> None:
    assert round_trip(Shipment, shipment) == shipment


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-(2**63), 2**63 - 1)), st.text(), st.none() | st.booleans())
def test_plain_types_have_their_avro_forms(ints: list[int], text: str, flag: bool | None) -> None:
    assert round_trip(list[int], ints) == ints
    assert round_trip(str, text) == text
    assert round_trip(bool | None, flag) == flag


def test_a_new_field_with_a_default_keeps_its_default_for_backward_compatibility() -> None:
    fields = {f["name"]: f for f in avro_schema(Shipment)["fields"]}
    assert fields["size"]["default"] == "small"
    assert fields["parts"]["default"] == []
    assert fields["note"] == {"name": "note", "type": ["null", "string"], "default": None}
    assert "default" not in fields["id"]
    assert fields["spare"]["type"] == ["null", "Part"]  # defined once, then by name


@pytest.mark.parametrize(
    ("declared", "problem"),
    [
        (dict[int, str], "an Avro map's keys are strings"),
        (complex, "complex has no Avro form"),
        (enum.Enum("Odd", {"a": 1}), "needs str values that are Avro names"),
    ],
)
def test_a_type_avro_cannot_hold_is_refused_with_the_reason(declared: Any, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        avro_schema(declared)
