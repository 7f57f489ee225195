"""Protocol-buffer wire format primitives for the Example decoder (`vmmlib.io.example`): tags, varints,
lengths, skipping unknown fields (groups included), packed varints, and raw vectors cut from bytes fields.

The limits are those of the upb parser behind `google.protobuf` (checked by the differential fuzz test
in tests/io): a tag is a varint of at most 5 bytes and at most 2**32 - 1, field number 0 is invalid
(except inside an unknown group, where upb skips it like any other field), a length prefix is at most 5 bytes, a value varint at most 10 bytes (bits past 64 are dropped), wire
types 6 and 7 are invalid, an end-group tag must close the group opened with the same field number,
and messages plus groups nest at most `MAX_DEPTH` deep (the top-level message is depth 0).
"""

from __future__ import annotations

import numpy as np

MAX_DEPTH = 100  # upb's default nesting limit: a group opened at depth 100 is refused
_U64 = (1 << 64) - 1
_INT64_MAX = (1 << 63) - 1


class Malformed(Exception):
    """Wire-format problem; the decoder turns it into RecordError("protobuf parse error: ...")."""


class WrongSize(Exception):
    """Raw elements that do not fit the requested dtype and dim (valid protobuf, refused by vmmlib)."""


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Varint at `pos` -> (value modulo 2**64, position after it). At most 10 bytes."""
    result = shift = 0
    while True:
        b = buf[pos]  # IndexError -> truncated
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result & _U64, pos
        shift += 7
        if shift >= 70:
            raise Malformed("varint longer than 10 bytes")


def read_tag(buf: bytes, pos: int) -> tuple[int, int]:
    """Multi-byte tag at `pos` (the caller handles the one-byte case) -> (tag, position after it)."""
    tag = shift = 0
    for i in range(5):
        b = buf[pos + i]
        tag |= (b & 0x7F) << shift
        if b < 0x80:
            if tag > 0xFFFFFFFF:
                raise Malformed(f"tag {tag} is larger than 32 bits")
            return tag, pos + i + 1
        shift += 7
    raise Malformed("tag varint longer than 5 bytes")


def read_len(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """Length prefix at `pos` -> (start, stop) of the payload, checked against `end`."""
    n = buf[pos]
    if n < 0x80:
        pos += 1
    else:  # two- and three-byte lengths inlined (frames, whole records)
        b = buf[pos + 1]
        if b < 0x80:
            n = (n & 0x7F) | (b << 7)
            pos += 2
        else:
            c = buf[pos + 2]
            if c < 0x80:
                n = (n & 0x7F) | ((b & 0x7F) << 7) | (c << 14)
                pos += 3
            else:
                start = pos
                n, pos = read_varint(buf, pos)
                if pos - start > 5:
                    raise Malformed("length prefix longer than 5 bytes")
    stop = pos + n
    if stop > end:
        raise Malformed(f"field of {n} bytes runs past the end of its message")
    return pos, stop


def skip_field(buf: bytes, pos: int, end: int, tag: int, depth: int) -> int:
    """Skip the value of an unknown field of a message, whose `tag` was read just before `pos`.

    Args:
        depth: nesting depth of the message holding the field (0 for the record's top message).

    Returns:
        the position after the value (groups: after their end-group tag), at most `end`.
    """
    if tag >> 3 == 0:  # inside a group upb lets field number 0 pass; in a message it does not
        raise Malformed(f"field number 0 (tag {tag})")
    return _skip_value(buf, pos, end, tag, depth)


def _skip_value(buf: bytes, pos: int, end: int, tag: int, depth: int) -> int:
    wire = tag & 7
    if wire == 0:
        _, pos = read_varint(buf, pos)
    elif wire == 1:
        pos += 8
    elif wire == 2:
        pos = read_len(buf, pos, end)[1]
    elif wire == 5:
        pos += 4
    elif wire == 3:
        pos = _skip_group(buf, pos, end, tag >> 3, depth + 1)
    elif wire == 4:
        raise Malformed(f"end-group tag of field {tag >> 3} outside its group")
    else:
        raise Malformed(f"invalid wire type {wire} (tag {tag})")
    if pos > end:
        raise Malformed("field runs past the end of its message")
    return pos


def _skip_group(buf: bytes, pos: int, end: int, number: int, depth: int) -> int:
    if depth > MAX_DEPTH:
        raise Malformed(f"groups nested more than {MAX_DEPTH} deep")
    while pos < end:
        tag, pos = next_tag(buf, pos, end)
        if tag & 7 == 4:
            if tag >> 3 != number:
                raise Malformed(f"group {number} closed by the end-group tag of field {tag >> 3}")
            return pos
        pos = _skip_value(buf, pos, end, tag, depth)
    raise Malformed(f"group {number} is never closed")


def next_tag(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """Tag at `pos` (one byte or more) -> (tag, position after it), which must not pass `end`."""
    tag = buf[pos]
    if tag < 0x80:
        return tag, pos + 1
    tag, pos = read_tag(buf, pos)
    if pos > end:
        raise Malformed("tag runs past the end of its message")
    return tag, pos


def packed_varints(buf: bytes, pos: int, end: int) -> np.ndarray:
    """A packed run of varints at buf[pos:end] -> int64 (n,) (two's complement, as protobuf's int64)."""
    if end - pos <= 64:  # short lists (tags, labels): a Python loop beats numpy's per-call overhead
        values = []
        append = values.append
        while pos < end:
            b = buf[pos]
            if b < 0x80:
                append(b)
                pos += 1
                continue
            c = buf[pos + 1]
            if c < 0x80:  # two- and three-byte varints inlined (ids up to 2**21)
                append((b & 0x7F) | (c << 7))
                pos += 2
            elif buf[pos + 2] < 0x80:
                append((b & 0x7F) | ((c & 0x7F) << 7) | (buf[pos + 2] << 14))
                pos += 3
            else:
                v, pos = read_varint(buf, pos)
                append(v - (1 << 64) if v > _INT64_MAX else v)  # negative int64s are 10-byte varints
        if pos != end:
            raise Malformed("packed varint runs past the end of its field")
        return np.array(values, dtype=np.int64)
    a = np.frombuffer(buf, np.uint8, end - pos, pos)
    last = a < 0x80
    if not last[-1]:
        raise Malformed("packed varint runs past the end of its field")
    if last.all():
        return a.astype(np.int64)
    stops = np.flatnonzero(last)
    starts = np.empty_like(stops)
    starts[0] = 0
    starts[1:] = stops[:-1] + 1
    lengths = stops - starts + 1
    if lengths.max() > 10:
        raise Malformed("varint longer than 10 bytes")
    shift = (np.arange(a.size) - np.repeat(starts, lengths)).astype(np.uint64) * np.uint64(7)
    vals = (a & 0x7F).astype(np.uint64) << shift  # bits past 64 fall off, as in protobuf
    return np.bitwise_or.reduceat(vals, starts).view(np.int64)


def regular_run(buf: bytes, pos: int, end: int, header_end: int, n: int) -> int:
    """If [pos, end) repeats the element starting at `pos` (header buf[pos:header_end], n payload bytes)
    with identical headers, return the element count, else 0. Identical headers at every stride mean a
    sequential parse would find exactly these elements, so this check replaces the per-element loop."""
    stride = header_end - pos + n
    total = end - pos
    if total % stride:
        return 0
    count = total // stride
    if count > 1:
        for j in range(header_end - pos):
            if buf[pos + j : end : stride] != buf[pos + j : pos + j + 1] * count:
                return 0
    return count


# ------------------------------------------------------------------------ raw vectors from bytes fields


def empty_rows(dtype: np.dtype, dim: int | None) -> np.ndarray:
    return np.empty((0, dim or 0), dtype.newbyteorder("="))


def concat_rows(parts: list[np.ndarray], dtype: np.dtype, dim: int | None) -> np.ndarray:
    if len(parts) == 1:
        return parts[0]
    parts = [p for p in parts if len(p)]
    if not parts:
        return empty_rows(dtype, dim)
    widths = sorted({p.shape[1] for p in parts})
    if len(widths) > 1:
        raise WrongSize(f"raw elements of different sizes: {widths} items")
    return np.concatenate(parts)


def row_items(n: int, dtype: np.dtype, dim: int | None) -> int:
    """Items per row for raw elements of `n` bytes; raises if `n` does not fit `dtype` x `dim`."""
    if n % dtype.itemsize or (dim is not None and n != dim * dtype.itemsize):
        want = (
            f"{dim * dtype.itemsize} ({dim} x {dtype.name})"
            if dim is not None
            else f"a multiple of {dtype.itemsize}"
        )
        raise WrongSize(f"raw element of {n} bytes, expected {want}")
    return n // dtype.itemsize


def strided_rows(buf, run_start: int, count: int, stride: int, n: int, dtype: np.dtype, dim) -> np.ndarray:
    """buf[run_start : run_start + count * stride] is `count` elements of `stride` bytes whose last `n`
    bytes are the payload -> (count, n // itemsize) array of dtype: one byte-wise strided copy (faster
    than an item-wise one), then a free view; contiguous, aligned and writable."""
    row_items(n, dtype, dim)  # raises on a size mismatch
    block = np.frombuffer(buf, np.uint8, count * stride, run_start).reshape(count, stride)
    rows = block[:, stride - n :].copy().view(dtype)
    return rows if dtype.isnative else rows.astype(dtype.newbyteorder("="))


def rows_from_elements(elements: list[bytes], dtype: np.dtype, dim: int | None) -> np.ndarray:
    if not elements:
        return empty_rows(dtype, dim)
    sizes = {len(e) for e in elements}
    if len(sizes) > 1:
        raise WrongSize(f"raw elements of different sizes: {sorted(sizes)} bytes")
    d = row_items(len(elements[0]), dtype, dim)
    return np.frombuffer(b"".join(elements), dtype).reshape(-1, d).astype(dtype.newbyteorder("="))
