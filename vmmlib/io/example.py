"""tf.train.Example and tf.train.SequenceExample, decoded without TensorFlow (encoding: `vmmlib.io.encode`).

The messages (field numbers from tensorflow/core/example/{example,feature}.proto):

    Example         { Features features = 1; }
    SequenceExample { Features context = 1; FeatureLists feature_lists = 2; }
    Features        { map<string, Feature> feature = 1; }
    FeatureLists    { map<string, FeatureList> feature_list = 1; }
    FeatureList     { repeated Feature feature = 1; }
    Feature         { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList       { repeated bytes value = 1; }
    FloatList       { repeated float value = 1 [packed = true]; }
    Int64List       { repeated int64 value = 1 [packed = true]; }

The decoder is a hand-written wire-format parser (pure Python + numpy). It beats parsing with the upb
protobuf classes here because it skips unwanted keys without decoding them, takes a repeated run of
equally sized bytes elements (a video's frames) with a few strided comparisons instead of a Python loop,
and can cut such a run straight into a 2-D numpy array (`raw_dtypes`) with a single copy. Packed and
unpacked encodings of the numeric lists are both accepted, unknown fields are skipped, and repeated
map keys follow protobuf's last-one-wins rule.

Decoded values: bytes_list -> list[bytes] (trailing NUL bytes kept), float_list -> float32 1-D array,
int64_list -> int64 1-D array. A Feature with no kind set, or an empty list of any kind, decodes as an
empty value of the schema's type when a schema names the key (empty lists carry no type information
worth failing on), else as an empty list.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from vmmlib.io.tfrecord import RecordError, record_spans

__all__ = ["decode_example", "decode_sequence_example", "read_examples"]

FEATURE_TYPES = ("bytes", "float", "int64")
_KIND_NAME = {1: "bytes", 2: "float", 3: "int64"}  # Feature's oneof field number -> schema name
_INT64_MAX = (1 << 63) - 1


# ----------------------------------------------------------------------------------------------- decode


class _Malformed(Exception):
    """Wire-format problem; turned into RecordError("protobuf parse error: ...") at the top."""


class _WrongType(Exception):
    """Schema mismatch; turned into RecordError at the top."""


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]  # IndexError -> truncated
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Malformed("varint longer than 10 bytes")


def _read_len(buf: bytes, pos: int, end: int) -> tuple[int, int]:
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
                n, pos = _read_varint(buf, pos)
    stop = pos + n
    if stop > end:
        raise _Malformed(f"field of {n} bytes runs past the end of its message")
    return pos, stop


def _skip_field(buf: bytes, pos: int, end: int) -> int:
    tag, pos = _read_varint(buf, pos)
    wire = tag & 7
    if wire == 0:
        _, pos = _read_varint(buf, pos)
    elif wire == 1:
        pos += 8
    elif wire == 2:
        pos = _read_len(buf, pos, end)[1]
    elif wire == 5:
        pos += 4
    else:
        raise _Malformed(f"unsupported wire type {wire} (tag {tag})")
    if pos > end:
        raise _Malformed("field runs past the end of its message")
    return pos


def _regular_run(buf: bytes, pos: int, end: int, header_end: int, n: int) -> int:
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


def _bytes_list(buf: bytes, pos: int, end: int) -> list[bytes]:
    if pos + 2 <= end and buf[pos] == 0x0A and pos + 2 + buf[pos + 1] == end:
        return [buf[pos + 2 : end]]  # one short element (ids, titles)
    if pos < end and buf[pos] == 0x0A:
        start, stop = _read_len(buf, pos + 1, end)
        count = _regular_run(buf, pos, end, start, stop - start)
        if count:
            n, stride = stop - start, stop - pos
            return [buf[o : o + n] for o in range(start, end, stride)]
    out = []
    while pos < end:
        if buf[pos] == 0x0A:
            start, pos = _read_len(buf, pos + 1, end)
            out.append(buf[start:pos])
        else:
            pos = _skip_field(buf, pos, end)
    return out


def _raw_span(buf: bytes, pos: int, end: int, dtype: np.dtype, dim: int | None) -> np.ndarray:
    """A BytesList at buf[pos:end] whose elements are raw vectors -> (num_elements, dim) array, one copy."""
    if pos < end and buf[pos] == 0x0A:
        start, stop = _read_len(buf, pos + 1, end)
        count = _regular_run(buf, pos, end, start, stop - start)
        if count:  # what every writer produces
            return _strided_rows(buf, pos, count, stop - pos, stop - start, dtype, dim)
    return _rows_from_elements(_bytes_list(buf, pos, end), dtype, dim)


def _raw_rows(buf: bytes, spans: list[tuple[int, int]], raw: tuple[np.dtype, int | None]) -> np.ndarray:
    parts = [_raw_span(buf, pos, end, *raw) for pos, end in spans]
    return parts[0] if len(parts) == 1 else _concat_rows(parts, *raw)


def _concat_rows(parts: list[np.ndarray], dtype: np.dtype, dim: int | None) -> np.ndarray:
    if len(parts) == 1:
        return parts[0]
    parts = [p for p in parts if len(p)]
    if not parts:
        return np.empty((0, dim or 0), dtype.newbyteorder("="))
    widths = sorted({p.shape[1] for p in parts})
    if len(widths) > 1:
        raise _Malformed(f"raw elements of different sizes: {widths} items")
    return np.concatenate(parts)


def _row_items(n: int, dtype: np.dtype, dim: int | None) -> int:
    if n % dtype.itemsize or (dim is not None and n != dim * dtype.itemsize):
        want = (
            f"{dim * dtype.itemsize} ({dim} x {dtype.name})"
            if dim is not None
            else f"a multiple of {dtype.itemsize}"
        )
        raise _Malformed(f"raw element of {n} bytes, expected {want}")
    return n // dtype.itemsize


def _strided_rows(buf, run_start: int, count: int, stride: int, n: int, dtype: np.dtype, dim) -> np.ndarray:
    """buf[run_start : run_start + count * stride] is `count` elements of `stride` bytes whose last `n`
    bytes are the payload -> (count, n // itemsize) array of dtype: one byte-wise strided copy (faster
    than an item-wise one), then a free view; contiguous, aligned and writable."""
    if n % dtype.itemsize or (dim is not None and n != dim * dtype.itemsize):
        _row_items(n, dtype, dim)  # raises
    block = np.frombuffer(buf, np.uint8, count * stride, run_start).reshape(count, stride)
    rows = block[:, stride - n :].copy().view(dtype)
    return rows if dtype.isnative else rows.astype(dtype.newbyteorder("="))


def _rows_from_elements(elements: list[bytes], dtype: np.dtype, dim: int | None) -> np.ndarray:
    if not elements:
        return np.empty((0, dim or 0), dtype.newbyteorder("="))
    sizes = {len(e) for e in elements}
    if len(sizes) > 1:
        raise _Malformed(f"raw elements of different sizes: {sorted(sizes)} bytes")
    d = _row_items(len(elements[0]), dtype, dim)
    return np.frombuffer(b"".join(elements), dtype).reshape(-1, d).astype(dtype.newbyteorder("="))


def _packed_varints(buf: bytes, pos: int, end: int) -> np.ndarray:
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
                v, pos = _read_varint(buf, pos)
                append(v - (1 << 64) if v > _INT64_MAX else v)  # negative int64s are 10-byte varints
        if pos != end:
            raise _Malformed("packed varint runs past the end of its field")
        return np.array(values, dtype=np.int64)
    a = np.frombuffer(buf, np.uint8, end - pos, pos)
    last = a < 0x80
    if not last[-1]:
        raise _Malformed("packed varint runs past the end of its field")
    if last.all():
        return a.astype(np.int64)
    stops = np.flatnonzero(last)
    starts = np.empty_like(stops)
    starts[0] = 0
    starts[1:] = stops[:-1] + 1
    lengths = stops - starts + 1
    if lengths.max() > 10:
        raise _Malformed("varint longer than 10 bytes")
    shift = (np.arange(a.size) - np.repeat(starts, lengths)).astype(np.uint64) * np.uint64(7)
    vals = (a & 0x7F).astype(np.uint64) << shift
    return np.bitwise_or.reduceat(vals, starts).view(np.int64)


def _int64_list(buf: bytes, pos: int, end: int) -> np.ndarray:
    if pos + 2 <= end and buf[pos] == 0x0A and pos + 2 + buf[pos + 1] == end:
        return _packed_varints(buf, pos + 2, end)  # the usual single packed field
    parts = []
    while pos < end:
        tag = buf[pos]
        if tag == 0x0A:  # packed
            start, pos = _read_len(buf, pos + 1, end)
            parts.append(_packed_varints(buf, start, pos))
        elif tag == 0x08:  # unpacked
            v, pos = _read_varint(buf, pos + 1)
            parts.append(np.array([v], np.uint64).view(np.int64))
        else:
            pos = _skip_field(buf, pos, end)
    if pos != end:
        raise _Malformed("int64_list runs past the end of its message")
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


def _float_list(buf: bytes, pos: int, end: int) -> np.ndarray:
    parts = []
    while pos < end:
        tag = buf[pos]
        if tag == 0x0A:  # packed
            start, pos = _read_len(buf, pos + 1, end)
            if (pos - start) % 4:
                raise _Malformed(f"packed float field of {pos - start} bytes")
            parts.append(np.frombuffer(buf, "<f4", (pos - start) // 4, start))
        elif tag == 0x0D:  # unpacked fixed32
            if pos + 5 > end:
                raise _Malformed("float runs past the end of its message")
            parts.append(np.frombuffer(buf, "<f4", 1, pos + 1))
            pos += 5
        else:
            pos = _skip_field(buf, pos, end)
    if not parts:
        return np.empty(0, np.float32)
    # astype copies: the result must not keep the whole record alive through a view
    return (parts[0] if len(parts) == 1 else np.concatenate(parts)).astype(np.float32)


_LIST_TAGS = (0x0A, 0x12, 0x1A)  # Feature.bytes_list, float_list, int64_list, length-delimited
_EMPTY = {"bytes": list, "float": lambda: np.empty(0, np.float32), "int64": lambda: np.empty(0, np.int64)}


def _feature(buf: bytes, pos: int, end: int, key: str, want: str | None, raw) -> Any:
    """Decode one Feature message at buf[pos:end]."""
    if raw is None and pos + 2 <= end and pos + 2 + buf[pos + 1] == end:
        # the usual small feature: one list field with a 1-byte length, of the expected type
        tag, start = buf[pos], pos + 2
        if tag == 0x0A and (want is None or want == "bytes"):
            if start + 2 <= end and buf[start] == 0x0A and start + 2 + buf[start + 1] == end:
                return [buf[start + 2 : end]]  # one short element (ids, titles)
            return _bytes_list(buf, start, end)
        if tag == 0x1A and (want is None or want == "int64"):
            if start + 2 <= end and buf[start] == 0x0A and start + 2 + buf[start + 1] == end:
                return _packed_varints(buf, start + 2, end)  # one short packed field
            return _int64_list(buf, start, end)
        if tag == 0x12 and (want is None or want == "float"):
            return _float_list(buf, start, end)
    elif raw is not None and pos < end and buf[pos] == 0x0A:  # raw vectors: one bytes_list field
        start, stop = _read_len(buf, pos + 1, end)
        if stop == end:
            return _raw_span(buf, start, stop, *raw)
    return _feature_general(buf, pos, end, key, want, raw)


def _feature_general(buf: bytes, pos: int, end: int, key: str, want: str | None, raw) -> Any:
    """Any Feature layout: several fields, repeated list fields (merged), unknown fields, no kind."""
    kind, spans = 0, []
    while pos < end:
        tag = buf[pos]
        if tag in _LIST_TAGS:
            start, stop = _read_len(buf, pos + 1, end)
            if tag >> 3 != kind:  # oneof: a later kind replaces an earlier one
                kind, spans = tag >> 3, []
            spans.append((start, stop))
            pos = stop
        else:
            pos = _skip_field(buf, pos, end)
    if raw is not None and kind < 2:
        value = _raw_rows(buf, spans, raw)
    elif kind == 1:
        value = [v for span in spans for v in _bytes_list(buf, *span)]
    elif kind == 2:
        value = np.concatenate([_float_list(buf, *span) for span in spans])
    elif kind == 3:
        value = np.concatenate([_int64_list(buf, *span) for span in spans])
    else:
        return _EMPTY[want]() if want else []
    if want is not None and _KIND_NAME[kind] != want:
        if len(value):
            raise _WrongType(f"feature {key!r} is {_KIND_NAME[kind]}_list, schema says {want}")
        value = _EMPTY[want]()
    elif raw is not None and kind > 1:
        if len(value):
            raise _WrongType(f"feature {key!r} is {_KIND_NAME[kind]}_list, raw_dtypes expects bytes")
        value = np.empty((0, raw[1] or 0), raw[0].newbyteorder("="))
    return value


def _map_entry(buf: bytes, pos: int, end: int) -> tuple[str, int, int]:
    """A map entry (key = 1, value = 2) -> key and the value's span; the general, slow path."""
    key, vstart, vstop = b"", end, end  # missing fields take their defaults
    while pos < end:
        tag = buf[pos]
        if tag == 0x0A:
            kstart, pos = _read_len(buf, pos + 1, end)
            key = buf[kstart:pos]
        elif tag == 0x12:
            vstart, pos = _read_len(buf, pos + 1, end)
            vstop = pos
        else:
            pos = _skip_field(buf, pos, end)
    return key.decode("utf-8"), vstart, vstop


_NO_OPTIONS = (None, None)


def _map(buf: bytes, pos: int, end: int, out: dict, keys, options, decode) -> None:
    """Decode a Features / FeatureLists map into `out` with `decode(buf, start, stop, key, want, raw)`."""
    while pos < end:
        if buf[pos] != 0x0A:
            pos = _skip_field(buf, pos, end)
            continue
        n = buf[pos + 1]  # entry length; a byte read past `end` is caught by the bound check below
        if n < 0x80:
            start = pos + 2
            pos = start + n
            if pos > end:
                raise _Malformed(f"map entry of {n} bytes runs past the end of its message")
        else:
            start, pos = _read_len(buf, pos + 1, end)
        # usual entry layout, inlined for speed: 0x0a klen key 0x12 vlen value, nothing after
        klen = buf[start + 1] if start + 1 < pos else 0x80
        kstop = start + 2 + klen
        if klen < 0x80 and kstop + 1 < pos and buf[start] == 0x0A and buf[kstop] == 0x12:
            n = buf[kstop + 1]
            if n < 0x80:
                vstart, vstop = kstop + 2, kstop + 2 + n
            else:
                vstart, vstop = _read_len(buf, kstop + 1, pos)
            if vstop == pos:
                key = buf[start + 2 : kstop].decode("utf-8")
            else:
                key, vstart, vstop = _map_entry(buf, start, pos)
        else:
            key, vstart, vstop = _map_entry(buf, start, pos)
        if keys is None or key in keys:
            want, raw = options.get(key, _NO_OPTIONS) if options else _NO_OPTIONS
            out[key] = decode(buf, vstart, vstop, key, want, raw)


def _feature_list(buf: bytes, pos: int, end: int, key: str, want, raw) -> Any:
    if raw is not None:
        rows = _raw_feature_list(buf, pos, end, raw)
        if rows is not None:
            return rows
    steps = []
    while pos < end:
        if buf[pos] == 0x0A:
            start, pos = _read_len(buf, pos + 1, end)
            steps.append(_feature(buf, start, pos, key, want, raw))
        else:
            pos = _skip_field(buf, pos, end)
    if raw is not None:  # per-step (n_i, dim) arrays -> one (sum n_i, dim) array
        return _concat_rows(steps, *raw) if steps else np.empty((0, raw[1] or 0), raw[0].newbyteorder("="))
    return steps


def _raw_feature_list(buf: bytes, pos: int, end: int, raw) -> np.ndarray | None:
    """Fast path for a FeatureList whose steps are each a bytes_list of one equally sized element
    (YouTube-8M rgb/audio): one strided copy. None if the layout is anything else."""
    if pos >= end:
        return np.empty((0, raw[1] or 0), raw[0].newbyteorder("="))
    if buf[pos] != 0x0A:
        return None
    f_start, f_stop = _read_len(buf, pos + 1, end)  # Feature
    if f_start >= f_stop or buf[f_start] != 0x0A:
        return None
    b_start, b_stop = _read_len(buf, f_start + 1, f_stop)  # BytesList
    if b_stop != f_stop or b_start >= b_stop or buf[b_start] != 0x0A:
        return None
    v_start, v_stop = _read_len(buf, b_start + 1, b_stop)  # its one element
    if v_stop != b_stop:
        return None
    count = _regular_run(buf, pos, end, v_start, v_stop - v_start)
    if not count:
        return None
    return _strided_rows(buf, pos, count, f_stop - pos, v_stop - v_start, raw[0], raw[1])


def _parse_example(buf: bytes, pos: int, end: int, keys, options) -> dict:
    out: dict = {}
    while pos < end:
        if buf[pos] == 0x0A:
            start, pos = _read_len(buf, pos + 1, end)
            _map(buf, start, pos, out, keys, options, _feature)
        else:
            pos = _skip_field(buf, pos, end)
    return out


def _parse_sequence_example(buf: bytes, pos: int, end: int, keys, options) -> tuple[dict, dict]:
    context: dict = {}
    lists: dict = {}
    while pos < end:
        tag = buf[pos]
        if tag == 0x0A:
            start, pos = _read_len(buf, pos + 1, end)
            _map(buf, start, pos, context, keys, options, _feature)
        elif tag == 0x12:
            start, pos = _read_len(buf, pos + 1, end)
            _map(buf, start, pos, lists, keys, options, _feature_list)
        else:
            pos = _skip_field(buf, pos, end)
    return context, lists


def _options(keys, schema, raw_dtypes) -> tuple[frozenset | None, dict | None]:
    """Normalise the decode options once (read_examples parses many records with them):
    -> (keys or None, {key: (schema type or None, (little-endian dtype, dim) or None)} or None)."""
    keys = None if keys is None else frozenset([keys] if isinstance(keys, str) else keys)
    schema = dict(schema or {})
    bad = {k: v for k, v in schema.items() if v not in FEATURE_TYPES}
    if bad:
        raise ValueError(f"schema types must be one of {FEATURE_TYPES}, got {bad}")
    raw = {}
    for key, spec in (raw_dtypes or {}).items():
        dtype, dim = spec if isinstance(spec, tuple) else (spec, None)
        raw[key] = (np.dtype(dtype).newbyteorder("<"), None if dim is None else int(dim))
        if schema.get(key, "bytes") != "bytes":
            raise ValueError(f"raw_dtypes[{key!r}] needs a bytes feature, schema says {schema[key]}")
    options = {key: (schema.get(key), raw.get(key)) for key in schema.keys() | raw.keys()}
    return keys, options or None


def _decode(parse, buf, pos: int, end: int, keys, options, path, offset):
    try:
        return parse(buf, pos, end, keys, options)
    except _WrongType as e:
        raise RecordError(str(e), path, offset) from None
    except _Malformed as e:
        raise RecordError(f"protobuf parse error: {e}", path, offset) from None
    except IndexError:
        raise RecordError("protobuf parse error: truncated message", path, offset) from None
    except UnicodeDecodeError as e:
        raise RecordError(
            f"protobuf parse error: feature name is not UTF-8 ({e.reason})", path, offset
        ) from None
    except RecordError:
        raise
    except ValueError as e:  # numpy rejecting a malformed payload
        raise RecordError(f"protobuf parse error: {e}", path, offset) from None


def _as_buffer(data) -> bytes:
    return data if type(data) is bytes else bytes(data)


def decode_example(
    data: bytes | bytearray | memoryview,
    *,
    keys: Iterable[str] | None = None,
    schema: Mapping[str, str] | None = None,
    raw_dtypes: Mapping[str, Any] | None = None,
    path: str | os.PathLike | None = None,
    offset: int | None = None,
) -> dict[str, Any]:
    """Decode a serialized tf.train.Example.

    Args:
        data: the serialized message (one TFRecord record).
        keys: decode only these features; the others are skipped without decoding. Absent keys are
            absent from the result.
        schema: `{key: "bytes" | "float" | "int64"}`; a non-empty feature of another type raises.
        raw_dtypes: `{key: dtype}` or `{key: (dtype, dim)}`: that bytes_list holds raw little-endian
            vectors (one per element); it is returned as a `(num_elements, dim)` array of `dtype`,
            cut from the record with one copy. With `dim` given, the element size is checked and an
            empty list gives shape `(0, dim)`. E.g. QQ Browser frames: `{"frame_feature": ("<f2", 1536)}`.
        path, offset: where `data` came from, for the error message.

    Returns:
        `{key: value}`: list[bytes] for bytes_list, float32 (n,) for float_list, int64 (n,) for int64_list.

    Raises:
        RecordError: malformed protobuf, or a type that contradicts `schema` / `raw_dtypes`.
    """
    buf = _as_buffer(data)
    return _decode(_parse_example, buf, 0, len(buf), *_options(keys, schema, raw_dtypes), path, offset)


def decode_sequence_example(
    data: bytes | bytearray | memoryview,
    *,
    keys: Iterable[str] | None = None,
    schema: Mapping[str, str] | None = None,
    raw_dtypes: Mapping[str, Any] | None = None,
    path: str | os.PathLike | None = None,
    offset: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Decode a serialized tf.train.SequenceExample into `(context, feature_lists)`.

    `context` is decoded as in `decode_example`. Each feature list becomes a list with one value per
    step, decoded the same way; with `raw_dtypes` naming it, a `(num_steps, dim)` array instead (rows are
    the bytes elements of all steps in order: YouTube-8M `rgb` -> `{"rgb": (np.uint8, 1024)}`). `keys`,
    `schema` and `raw_dtypes` apply to context and feature-list names alike.
    """
    buf = _as_buffer(data)
    return _decode(
        _parse_sequence_example, buf, 0, len(buf), *_options(keys, schema, raw_dtypes), path, offset
    )


def read_examples(
    path: str | os.PathLike,
    *,
    keys: Iterable[str] | None = None,
    schema: Mapping[str, str] | None = None,
    sequence: bool = False,
    verify_crc: bool = True,
    raw_dtypes: Mapping[str, Any] | None = None,
    shard: tuple[int, int] | None = None,
) -> Iterator[dict[str, Any]] | Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Stream decoded records of one TFRecord file, in file order.

    Yields `decode_example` dicts, or `(context, feature_lists)` tuples with `sequence=True`.
    `shard=(k, n)` keeps records whose index is `k` mod `n`; the rest are skipped unread.
    Every error is a `RecordError` naming `path` and the record's byte offset.
    """
    keys, options = _options(keys, schema, raw_dtypes)
    parse = _parse_sequence_example if sequence else _parse_example
    for offset, buf, start, stop in record_spans(path, verify_crc=verify_crc, shard=shard):
        try:
            record = parse(buf, start, stop, keys, options)
        except Exception:  # rare: let _decode turn it into a RecordError (or re-raise a bug)
            record = _decode(parse, buf, start, stop, keys, options, path, offset)
        yield record
