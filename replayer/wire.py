"""Protobuf wire-format primitives shared by the hand-written encoders.

Each encoder writes canonical protobuf (fields in number order, default values left out),
so its output equals what the protocol's own generated classes serialise; tests check that.
"""

from __future__ import annotations

import struct

_SMALL = [bytes((i,)) for i in range(0x80)]


def varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _SMALL[value]
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint((number << 3) | wire_type)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return tag(number, 2) + varint(len(payload)) + payload


def text(number: int, value: str) -> bytes:
    """A string field, left out when empty (proto3 default)."""
    return field(number, value.encode()) if value else b""


def uint(number: int, value: int) -> bytes:
    """A varint field, left out when zero."""
    return tag(number, 0) + varint(value) if value else b""


def fixed64(number: int, value: int) -> bytes:
    return tag(number, 1) + struct.pack("<Q", value & ((1 << 64) - 1)) if value else b""


def double(number: int, value: float) -> bytes:
    packed = struct.pack("<d", value)
    return tag(number, 1) + packed if packed != bytes(8) else b""


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def read_fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """Top-level ``(field number, value)`` pairs of a message (varint or bytes fields)."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = read_varint(data, pos)
            out.append((number, value))
        elif wire_type == 2:
            size, pos = read_varint(data, pos)
            if pos + size > len(data):
                raise ValueError("truncated field")
            out.append((number, data[pos:pos + size]))
            pos += size
        elif wire_type in (1, 5):
            width = 8 if wire_type == 1 else 4
            out.append((number, data[pos:pos + width]))
            pos += width
        else:
            raise ValueError(f"unsupported wire type {wire_type}")
    return out
