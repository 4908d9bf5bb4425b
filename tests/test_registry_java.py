"""The registry's own serializer: Apicurio's Java Avro serdes (from Maven Central, run by
tests/JavaApicurioAvro.java on the JDK that runs the registry) read the records our Avro codec
writes, and our codec reads the records they write, through the same registry."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
from pydantic import BaseModel

from streamkit import localregistry
from streamkit.registry import Avro, RegistryClient

HERE = Path(__file__).resolve().parent


class Reading(BaseModel):  # the record JavaApicurioAvro.java writes
    sensor: str
    value: float


def test_apicurios_java_serdes_and_our_avro_codec_read_each_other(schema_registry: str) -> None:
    if not schema_registry.endswith("/apis/ccompat/v7"):
        pytest.skip(f"{schema_registry} is not an Apicurio registry's ccompat API")
    lib = localregistry.resolve_jars(HERE / "apicurio-serde" / "pom.xml")
    topic = f"java-{uuid.uuid4().hex[:8]}"
    codec = Avro(Reading, subject=f"{topic}-value")
    codec.prepare(RegistryClient(schema_registry))
    ours = [Reading(sensor=f"ours{i}", value=i * 1.5) for i in range(5)]
    frames = "".join(codec.encode(r).hex() + "\n" for r in ours)
    v3 = schema_registry.removesuffix("/apis/ccompat/v7") + "/apis/registry/v3"
    command = [localregistry.find_java(), "-cp", f"{lib}/*", str(HERE / "JavaApicurioAvro.java")]
    result = subprocess.run(
        [*command, v3, topic, "5"], input=frames, capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    read, written = result.stdout.split("--\n")
    assert [Reading.model_validate(json.loads(line)) for line in read.splitlines()] == ours
    theirs = [bytes.fromhex(line) for line in written.split()]
    # the same schema under the same subject: the same id, in the same 5-byte header
    assert {frame[:5] for frame in theirs} == {codec.encode(ours[0])[:5]}
    assert [codec.decode(frame) for frame in theirs] == [
        Reading(sensor=f"s{i}", value=i / 4) for i in range(5)
    ]
