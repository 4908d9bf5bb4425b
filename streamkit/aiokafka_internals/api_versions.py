"""ApiVersions v3: a broker's API version ranges and the cluster's finalized features.

aiokafka asks ApiVersions at v0 to v2, which carry no features. The transactional producer
needs one: `transaction.version` 2 or more (KIP-890 part 2) lets a transaction's Produce and
TxnOffsetCommit add their partitions themselves, with no AddPartitionsToTxn and no
AddOffsetsToTxn round trip, and bumps the producer's epoch at each EndTxn. Java's producer
decides the same way (`transaction.version` from the finalized features).

The response to ApiVersions has a v0 header (no tagged fields) whatever the version: the
broker cannot know yet whether the client reads flexible headers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from io import BytesIO
from typing import Any

from aiokafka.protocol.api import Request, RequestStruct, Response, ResponseHeader_v0
from aiokafka.protocol.types import CompactString, Int16, Schema, TaggedFields

from streamkit.aiokafka_internals.produce import read_uvarint, skip_tags

API_VERSIONS = 18
_FINALIZED_FEATURES_TAG = 2
_API = struct.Struct(">hhh")  # api key, min version, max version
_CODE = struct.Struct(">h")
_LEVELS = struct.Struct(">hh")  # max level, min level


@dataclass(frozen=True)
class BrokerVersions:
    error_code: int
    apis: dict[int, tuple[int, int]]  # api key: (min, max)
    features: dict[str, int]  # finalized feature: its (max) level

    def supports(self, api_key: int, version: int) -> bool:
        low, high = self.apis.get(api_key, (0, -1))
        return low <= version <= high


class _ApiVersionsResult(Response):  # type: ignore[misc]
    API_KEY = API_VERSIONS
    API_VERSION = 3
    SCHEMA = Schema(("error_code", Int16))  # (repr only; `decode` reads the whole body)

    def __init__(self, versions: BrokerVersions) -> None:
        self.versions = versions

    @classmethod
    def decode(cls, data: BytesIO | bytes) -> _ApiVersionsResult:
        buf = data.getvalue() if isinstance(data, BytesIO) else data
        pos = data.tell() if isinstance(data, BytesIO) else 0
        (code,) = _CODE.unpack_from(buf, pos)
        pos += 2
        apis: dict[int, tuple[int, int]] = {}
        count, pos = read_uvarint(buf, pos)
        for _ in range(count - 1):
            key, low, high = _API.unpack_from(buf, pos)
            apis[key] = (low, high)
            pos = skip_tags(buf, pos + _API.size)
        pos += 4  # throttle time
        features: dict[str, int] = {}
        tags, pos = read_uvarint(buf, pos)
        for _ in range(tags):
            tag, pos = read_uvarint(buf, pos)
            size, pos = read_uvarint(buf, pos)
            if tag == _FINALIZED_FEATURES_TAG:
                features = _features(buf, pos)
            pos += size
        return cls(BrokerVersions(code, apis, features))

    def __repr__(self) -> str:
        return f"ApiVersionsResponse_v3({self.versions.features})"


def _features(buf: bytes, pos: int) -> dict[str, int]:
    out: dict[str, int] = {}
    count, pos = read_uvarint(buf, pos)
    for _ in range(count - 1):
        length, pos = read_uvarint(buf, pos)
        name = buf[pos : pos + length - 1].decode()
        pos += length - 1
        high, _ = _LEVELS.unpack_from(buf, pos)
        pos = skip_tags(buf, pos + _LEVELS.size)
        out[name] = high
    return out


class _ApiVersionsV3(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = API_VERSIONS
    API_VERSION = 3
    RESPONSE_TYPE = _ApiVersionsResult
    SCHEMA = Schema(
        ("client_software_name", CompactString("utf-8")),
        ("client_software_version", CompactString("utf-8")),
        ("tags", TaggedFields),
    )

    def parse_response_header(self, read_buffer: BytesIO | bytes) -> Any:
        return ResponseHeader_v0.decode(read_buffer)  # always v0 for ApiVersions


class ApiVersionsV3(Request[_ApiVersionsV3]):  # type: ignore[misc]
    API_KEY = API_VERSIONS
    ALLOW_UNKNOWN_API_VERSION = True

    def build(self, request_struct_class: type[_ApiVersionsV3]) -> _ApiVersionsV3:
        return _ApiVersionsV3("streamkit", "1", {})


async def broker_versions(client: Any, node_id: int) -> BrokerVersions:
    """ApiVersions v3 from one broker through an aiokafka client."""
    response = await client.send(node_id, ApiVersionsV3())
    return response.versions  # type: ignore[no-any-return]
