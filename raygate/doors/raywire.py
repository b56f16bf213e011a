"""The few Ray Client protobuf messages the door looks into, read and written by hand (the
gateway does not depend on Ray's generated code): the connect-time PING, and the data stream's
InitResponse, where Ray reports that its client server failed to start a session.

Field numbers are those of Ray's ray_client.proto (Ray 2.x):
ClusterInfoRequest{type=1}, ClusterInfoResponse{type=1, json=2}, ClusterInfoType.PING = 6,
DataResponse{req_id=1, ..., init=6}, InitResponse{ok=1, msg=2}.
"""

from __future__ import annotations

PING_REQUEST = b"\x08\x06"
PING_RESPONSE = b"\x08\x06\x12\x02{}"

_DATA_RESPONSE_INIT = 6
_INIT_OK = 1
_INIT_MSG = 2
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5

RAY_STARTUP_FAILURE = "Starting Ray client server failed"
RAY_STARTUP_NOTE = (
    "Ray's client server failed to start this session (an error of Ray, not raygate; "
    "connecting again usually works). Ray said:\n"
)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def fields(data: bytes) -> list[tuple[int, int, bytes | int, int, int]]:
    """(field number, wire type, value, start, end) of each top-level field; ValueError if the
    bytes are not a protobuf message."""
    found = []
    pos = 0
    while pos < len(data):
        start = pos
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: bytes | int
        if wire == _VARINT:
            value, pos = _varint(data, pos)
        elif wire == _LEN:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated field")
            value, pos = data[pos : pos + length], pos + length
        elif wire == _I64:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == _I32:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated field")
        found.append((number, wire, value, start, pos))
    return found


def init_response(message: bytes) -> tuple[bool, str] | None:
    """(ok, msg) when `message` (a DataResponse) is an InitResponse; else None."""
    try:
        for number, wire, value, _, _ in fields(message):
            if number == _DATA_RESPONSE_INIT and wire == _LEN:
                assert isinstance(value, bytes)
                ok, msg = False, ""
                for inner_number, inner_wire, inner, _, _ in fields(value):
                    if inner_number == _INIT_OK and inner_wire == _VARINT:
                        ok = bool(inner)
                    elif inner_number == _INIT_MSG and inner_wire == _LEN:
                        assert isinstance(inner, bytes)
                        msg = inner.decode(errors="replace")
                return ok, msg
    except ValueError:
        return None
    return None


def explain_ray_startup_failure(message: bytes) -> bytes:
    """A failed InitResponse of Ray's "Starting Ray client server failed", with a first line
    saying it is Ray's failure; any other message unchanged."""
    init = init_response(message)
    if init is None or init[0] or RAY_STARTUP_FAILURE not in init[1]:
        return message
    text = (RAY_STARTUP_NOTE + init[1]).encode()
    new_init = bytes([(_INIT_OK << 3) | _VARINT, 0])
    new_init += bytes([(_INIT_MSG << 3) | _LEN]) + _encode_varint(len(text)) + text
    out = bytearray()
    for number, _wire, _value, start, end in fields(message):
        if number == _DATA_RESPONSE_INIT:
            out += bytes([(_DATA_RESPONSE_INIT << 3) | _LEN])
            out += _encode_varint(len(new_init)) + new_init
        else:
            out += message[start:end]
    return bytes(out)
