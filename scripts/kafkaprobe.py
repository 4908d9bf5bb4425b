"""Who plays which part in a local Kafka cluster, asked over the wire (standard library only,
like localkafka.py): the coordinator of a transactional id or a group (FindCoordinator v1) and
the active KRaft controller (DescribeQuorum v0 on `__cluster_metadata`, which a broker
forwards to the controllers). The chaos tests use them to kill -9 the node that holds a part.

Each function asks one node (`port` on 127.0.0.1) and returns None when it cannot answer (down,
not ready, or an error code): callers poll until they get an answer.
"""

from __future__ import annotations

import socket
import struct

from localkafka import HOST

CLIENT_ID = b"kafkaprobe"
GROUP, TRANSACTION = 0, 1  # FindCoordinator key types


def _exchange(port: int, request: bytes, timeout: float) -> bytes | None:
    """Send one framed request; the response body after its correlation id (None: no answer)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            with sock.makefile("rb") as reader:
                head = reader.read(4)
                if len(head) < 4:
                    return None
                (size,) = struct.unpack(">i", head)
                body = reader.read(size) if 4 <= size < 1 << 20 else b""
    except OSError:
        return None
    if len(body) < 4 or struct.unpack_from(">i", body)[0] != 1:
        return None
    return body[4:]


def find_coordinator(port: int, key: str, key_type: int, timeout: float = 2.0) -> int | None:
    """The node id coordinating `key` (a transactional id: TRANSACTION; a group: GROUP)."""
    raw = key.encode()
    request = (
        struct.pack(">hhih", 10, 1, 1, len(CLIENT_ID))
        + CLIENT_ID
        + struct.pack(">h", len(raw))
        + raw
        + struct.pack(">b", key_type)
    )
    body = _exchange(port, request, timeout)
    if body is None or len(body) < 8:
        return None
    _throttle, error = struct.unpack_from(">ih", body)
    if error:
        return None
    (message_len,) = struct.unpack_from(">h", body, 6)
    at = 8 + max(message_len, 0)
    (node_id,) = struct.unpack_from(">i", body, at)
    return int(node_id)


def _uvarint(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def active_controller(port: int, timeout: float = 2.0) -> int | None:
    """The node id of the KRaft quorum's leader (the active controller), or None if unknown."""
    topic = b"__cluster_metadata"
    # header v2 (client id a plain string, then no tagged fields); body: compact arrays
    request = (
        struct.pack(">hhih", 55, 0, 1, len(CLIENT_ID))
        + CLIENT_ID
        + b"\x00"
        + b"\x02"  # one topic
        + bytes([len(topic) + 1])
        + topic
        + b"\x02"  # one partition
        + struct.pack(">i", 0)
        + b"\x00\x00\x00"  # tagged fields: partition, topic, request
    )
    body = _exchange(port, request, timeout)
    if body is None:
        return None
    try:
        _tags, at = _uvarint(body, 0)  # response header v1: tagged fields
        (error,) = struct.unpack_from(">h", body, at)
        topics, at = _uvarint(body, at + 2)
        name_len, at = _uvarint(body, at)
        partitions, at = _uvarint(body, at + name_len - 1)
        _index, part_error, leader = struct.unpack_from(">ihi", body, at)
    except (IndexError, struct.error):
        return None
    if error or part_error or topics != 2 or partitions != 2 or leader < 0:
        return None
    return int(leader)
