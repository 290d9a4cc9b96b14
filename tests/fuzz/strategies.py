"""Shared Hypothesis strategies: valid seed files mutated byte by byte, and the awkward
numbers a proto field can carry."""

from __future__ import annotations

import struct

from hypothesis import strategies as st


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """A valid file with a few byte flips, insertions, deletions or a truncation; headers
    (the first bytes) are hit more often than the payload."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        near_header = draw(st.booleans())
        pos = draw(st.integers(0, min(len(data), 64 if near_header else len(data)) - 1))
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "int32"]))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            data[pos] = draw(st.sampled_from([0x00, 0x01, 0x7F, 0x80, 0xFF]))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        elif op == "truncate":
            del data[pos:]
        else:  # an interesting 32-bit value over a length, size or count field
            value = draw(st.sampled_from([0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 65536]))
            data[pos:pos + 4] = struct.pack(draw(st.sampled_from(["<I", ">I"])), value)
    return bytes(data)


# Anything a proto3 float field can hold, with the edge cases drawn often.
float32s = st.one_of(
    st.sampled_from([0.0, -0.0, float("nan"), float("inf"), float("-inf"), 1.0, -1.0,
                     3.4028234663852886e38, -3.4028234663852886e38, 1e-45]),
    st.floats(width=32, allow_nan=True, allow_infinity=True),
)
int32s = st.one_of(st.sampled_from([0, 1, -1, 2**31 - 1, -(2**31)]),
                   st.integers(-(2**31), 2**31 - 1))
int64s = st.integers(-(2**63), 2**63 - 1)
