"""tf.train.Example and tf.train.SequenceExample, decoded without TensorFlow (encoding: `vmmlib.io.encode`).

The messages (field numbers from tensorflow/core/example/{example,feature}.proto, proto3):

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
protobuf classes here because it takes a repeated run of equally sized bytes elements (a video's
frames) with a few strided comparisons instead of a Python loop, can cut such a run straight into a
2-D numpy array (`raw_dtypes`) with a single copy, and only checks (does not build) the values of keys
it was not asked for.

It accepts and rejects exactly what `google.protobuf` (upb) does, and decodes to the same values
(tests/io/test_example_fuzz.py compares the two on thousands of mutated records). What that means:
packed and unpacked numeric lists are both read; unknown fields (any field number or wire type the
schema does not expect, groups included) are skipped; a message field given twice is merged (two
`Feature`s of one kind concatenate their lists; a later kind replaces an earlier one); a map key given
twice keeps the last entry; a map entry carrying an unknown field is left out of the map (upb keeps
it as an unknown field of the map's message); a feature name that is not UTF-8 rejects the record.
Keys outside `keys` are checked as protobuf would parse them, so filtering never accepts a record
protobuf refuses.

Decoded values: bytes_list -> list[bytes] (trailing NUL bytes kept), float_list -> float32 1-D array,
int64_list -> int64 1-D array. A Feature with no kind set, or an empty list of any kind, decodes as an
empty value of the schema's type when a schema names the key (empty lists carry no type information
worth failing on), else as an empty list.

Text: protobuf's `BytesList.value` is `bytes`, so a bytes_list decodes to bytes whatever it holds. A
feature that is text (ids, titles) is named `"text"` in the schema: it decodes to list[str], and an
element that is not UTF-8 raises RecordError naming the key, the file and the record's offset.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from vmmlib.io.tfrecord import RecordError, record_spans
from vmmlib.io.wire import (
    Malformed,
    WrongSize,
    concat_rows,
    empty_rows,
    next_tag,
    packed_varints,
    read_len,
    read_varint,
    regular_run,
    rows_from_elements,
    skip_field,
    strided_rows,
)

__all__ = ["decode_example", "decode_sequence_example", "read_examples"]

FEATURE_TYPES = ("bytes", "text", "float", "int64")
_KIND_NAME = {1: "bytes", 2: "float", 3: "int64"}  # Feature's oneof field number -> schema name

# Message depths (the record's message is 0), for skipping groups as deep as upb allows. A Feature
# sits at depth 3 in a Features map (Features 1, map entry 2) and 4 in a FeatureList.
_FEATURE_DEPTH = 3


# ----------------------------------------------------------------------------------------------- decode


class _WrongType(Exception):
    """Schema mismatch; turned into RecordError at the top."""


class _Refused:
    """A value vmmlib refuses (schema type, raw size, text that is not UTF-8) although protobuf parses
    it: raised once the record is parsed, unless a later map entry with the same key replaced it."""

    __slots__ = ("error",)

    def __init__(self, error: Exception):
        self.error = error


def _raise_refused(*maps: dict) -> None:
    for values in maps:
        for value in values.values():
            if type(value) is _Refused:
                raise value.error


def _bytes_list(buf: bytes, pos: int, end: int, depth: int) -> list[bytes]:
    if pos + 2 <= end and buf[pos] == 0x0A and buf[pos + 1] < 0x80 and pos + 2 + buf[pos + 1] == end:
        return [buf[pos + 2 : end]]  # one short element (ids, titles)
    if pos < end and buf[pos] == 0x0A:
        start, stop = read_len(buf, pos + 1, end)
        count = regular_run(buf, pos, end, start, stop - start)
        if count:
            n, stride = stop - start, stop - pos
            return [buf[o : o + n] for o in range(start, start + count * stride, stride)]  # n may be 0
    out = []
    while pos < end:
        tag, pos = next_tag(buf, pos, end)
        if tag == 0x0A:
            start, pos = read_len(buf, pos, end)
            out.append(buf[start:pos])
        else:
            pos = skip_field(buf, pos, end, tag, depth)
    return out


def _raw_span(buf: bytes, pos: int, end: int, depth: int, dtype: np.dtype, dim: int | None) -> np.ndarray:
    """A BytesList at buf[pos:end] whose elements are raw vectors -> (num_elements, dim) array, one copy."""
    if pos < end and buf[pos] == 0x0A:
        start, stop = read_len(buf, pos + 1, end)
        count = regular_run(buf, pos, end, start, stop - start)
        if count:  # what every writer produces
            return strided_rows(buf, pos, count, stop - pos, stop - start, dtype, dim)
    return rows_from_elements(_bytes_list(buf, pos, end, depth), dtype, dim)


def _int64_list(buf: bytes, pos: int, end: int, depth: int) -> np.ndarray:
    if pos + 2 <= end and buf[pos] == 0x0A and buf[pos + 1] < 0x80 and pos + 2 + buf[pos + 1] == end:
        return packed_varints(buf, pos + 2, end)  # the usual single packed field
    parts = []
    while pos < end:
        tag, pos = next_tag(buf, pos, end)
        if tag == 0x0A:  # packed
            start, pos = read_len(buf, pos, end)
            parts.append(packed_varints(buf, start, pos))
        elif tag == 0x08:  # unpacked
            v, pos = read_varint(buf, pos)
            if pos > end:
                raise Malformed("varint runs past the end of its message")
            parts.append(np.array([v], np.uint64).view(np.int64))
        else:
            pos = skip_field(buf, pos, end, tag, depth)
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


def _float_list(buf: bytes, pos: int, end: int, depth: int) -> np.ndarray:
    parts = []
    while pos < end:
        tag, pos = next_tag(buf, pos, end)
        if tag == 0x0A:  # packed
            start, pos = read_len(buf, pos, end)
            if (pos - start) % 4:
                raise Malformed(f"packed float field of {pos - start} bytes")
            parts.append(np.frombuffer(buf, "<f4", (pos - start) // 4, start))
        elif tag == 0x0D:  # unpacked fixed32
            if pos + 4 > end:
                raise Malformed("float runs past the end of its message")
            parts.append(np.frombuffer(buf, "<f4", 1, pos))
            pos += 4
        else:
            pos = skip_field(buf, pos, end, tag, depth)
    if not parts:
        return np.empty(0, np.float32)
    # astype copies: the result must not keep the whole record alive through a view
    return (parts[0] if len(parts) == 1 else np.concatenate(parts)).astype(np.float32)


_LIST_TAGS = (0x0A, 0x12, 0x1A)  # Feature.bytes_list, float_list, int64_list, length-delimited
_LIST_DECODERS = {1: _bytes_list, 2: _float_list, 3: _int64_list}
_EMPTY = {
    "bytes": list,
    "text": list,
    "float": lambda: np.empty(0, np.float32),
    "int64": lambda: np.empty(0, np.int64),
}


def _empty(want: str | None, raw) -> Any:
    if raw is not None:
        return empty_rows(*raw)
    return _EMPTY[want]() if want else []


def _text(key: str, values: list[bytes]) -> list[str]:
    try:
        return [bytes(v).decode("utf-8") for v in values]
    except UnicodeDecodeError as e:
        raise _WrongType(f"feature {key!r} is not UTF-8 text ({e.reason} at byte {e.start})") from None


def _feature(
    buf: bytes, pos: int, end: int, key: str, want: str | None, raw, depth: int = _FEATURE_DEPTH
) -> Any:
    """Decode one Feature message at buf[pos:end]."""
    if want == "text":
        return _text(key, _feature_general(buf, pos, end, key, want, None, depth))
    if raw is None and pos + 2 <= end and buf[pos + 1] < 0x80 and pos + 2 + buf[pos + 1] == end:
        # the usual small feature: one list field with a 1-byte length, of the expected type
        tag, start = buf[pos], pos + 2
        if tag == 0x0A and (want is None or want == "bytes"):
            return _bytes_list(buf, start, end, depth + 1)
        if tag == 0x1A and (want is None or want == "int64"):
            return _int64_list(buf, start, end, depth + 1)
        if tag == 0x12 and (want is None or want == "float"):
            return _float_list(buf, start, end, depth + 1)
    elif raw is not None and pos < end and buf[pos] == 0x0A:  # raw vectors: one bytes_list field
        start, stop = read_len(buf, pos + 1, end)
        if stop == end:
            return _raw_span(buf, start, stop, depth + 1, *raw)
    return _feature_general(buf, pos, end, key, want, raw, depth)


def _feature_general(buf: bytes, pos: int, end: int, key: str, want: str | None, raw, depth: int) -> Any:
    """Any Feature layout: several fields, repeated list fields (merged), unknown fields, no kind."""
    kind, spans = 0, []
    while pos < end:
        tag, pos = next_tag(buf, pos, end)
        if tag in _LIST_TAGS:
            start, stop = read_len(buf, pos, end)
            if tag >> 3 != kind:  # oneof: a later kind replaces an earlier one, which is parsed all the same
                for span in spans:
                    _LIST_DECODERS[kind](buf, *span, depth + 1)
                kind, spans = tag >> 3, []
            spans.append((start, stop))
            pos = stop
        else:
            pos = skip_field(buf, pos, end, tag, depth)
    if kind == 0:
        return _empty(want, raw)
    if raw is not None and kind == 1:
        parts = [_raw_span(buf, *span, depth + 1, *raw) for span in spans]
        return concat_rows(parts, *raw)
    parts = [_LIST_DECODERS[kind](buf, *span, depth + 1) for span in spans]
    if kind == 1:
        value = [v for part in parts for v in part]
    else:
        value = parts[0] if len(parts) == 1 else np.concatenate(parts)
    expected = "bytes" if raw is not None or want == "text" else want
    if expected is not None and _KIND_NAME[kind] != expected:
        if len(value):
            says = "raw_dtypes expects bytes" if raw is not None else f"schema says {want}"
            raise _WrongType(f"feature {key!r} is {_KIND_NAME[kind]}_list, {says}")
        return _empty(want, raw)
    return value


def _check_feature(buf: bytes, pos: int, end: int) -> None:
    """Check a Feature that is not decoded (its key is not wanted) as protobuf would parse it."""
    if pos < end and buf[pos] == 0x0A:  # frames: one bytes_list of equally sized elements, checked at once
        start, stop = read_len(buf, pos + 1, end)
        if stop == end and start < stop and buf[start] == 0x0A:
            v_start, v_stop = read_len(buf, start + 1, stop)
            if regular_run(buf, start, stop, v_start, v_stop - v_start):
                return
    _feature_general(buf, pos, end, "", None, None, _FEATURE_DEPTH)


def _map_entry(buf: bytes, pos: int, end: int) -> tuple[str, list[tuple[int, int]], bool]:
    """A map entry (key = 1, value = 2) -> key, the value's spans, and whether it has no other field.

    The general, slow path: a missing key is "", a missing value an empty message; each key given is
    checked as UTF-8 and the last one counts; several values are merged."""
    key, spans, clean = "", [], True
    while pos < end:
        tag, pos = next_tag(buf, pos, end)
        if tag == 0x0A:
            start, pos = read_len(buf, pos, end)
            key = bytes(buf[start:pos]).decode("utf-8")
        elif tag == 0x12:
            start, pos = read_len(buf, pos, end)
            spans.append((start, pos))
        else:
            clean = False
            pos = skip_field(buf, pos, end, tag, 2)
    return key, spans, clean


_NO_OPTIONS = (None, None)


def _map(buf: bytes, pos: int, end: int, out: dict, keys, options, decode, check) -> None:
    """Decode a Features / FeatureLists map into `out` with `decode(buf, start, stop, key, want, raw)`;
    entries not wanted are checked with `check(buf, start, stop)`."""
    while pos < end:
        tag, pos = next_tag(buf, pos, end)
        if tag != 0x0A:
            pos = skip_field(buf, pos, end, tag, 1)
            continue
        n = buf[pos]  # entry length; a byte read past `end` is caught by the bound check below
        if n < 0x80:
            start = pos + 1
            pos = start + n
            if pos > end:
                raise Malformed(f"map entry of {n} bytes runs past the end of its message")
        else:
            start, pos = read_len(buf, pos, end)
        # usual entry layout, inlined for speed: 0x0a klen key 0x12 vlen value, nothing after
        spans = None
        klen = buf[start + 1] if start + 1 < pos else 0x80
        kstop = start + 2 + klen
        if klen < 0x80 and kstop + 1 < pos and buf[start] == 0x0A and buf[kstop] == 0x12:
            n = buf[kstop + 1]
            if n < 0x80:
                vstart, vstop = kstop + 2, kstop + 2 + n
            else:
                vstart, vstop = read_len(buf, kstop + 1, pos)
            if vstop == pos:
                key, spans = buf[start + 2 : kstop].decode("utf-8"), ((vstart, vstop),)
        if spans is None:
            key, spans, clean = _map_entry(buf, start, pos)
            if not clean:  # upb leaves an entry with unknown fields out of the map
                for span in spans:
                    check(buf, *span)
                continue
        if keys is not None and key not in keys:
            for span in spans:
                check(buf, *span)
            continue
        want, raw = options.get(key, _NO_OPTIONS) if options else _NO_OPTIONS
        try:
            if len(spans) == 1:
                out[key] = decode(buf, *spans[0], key, want, raw)
            else:  # no value (an empty message) or several (merged: the same as their concatenation)
                for span in spans:
                    check(buf, *span)
                joined = b"".join(buf[s:e] for s, e in spans)
                out[key] = decode(joined, 0, len(joined), key, want, raw)
        except (_WrongType, WrongSize) as e:
            for span in spans:  # whether protobuf parses the value still decides first
                check(buf, *span)
            out[key] = _Refused(e)


def _feature_list(buf: bytes, pos: int, end: int, key: str, want, raw) -> Any:
    if raw is not None:
        rows = _raw_feature_list(buf, pos, end, raw)
        if rows is not None:
            return rows
    steps = []
    while pos < end:
        tag, pos = next_tag(buf, pos, end)
        if tag == 0x0A:
            start, pos = read_len(buf, pos, end)
            steps.append(_feature(buf, start, pos, key, want, raw, _FEATURE_DEPTH + 1))
        else:
            pos = skip_field(buf, pos, end, tag, _FEATURE_DEPTH)
    if raw is not None:  # per-step (n_i, dim) arrays -> one (sum n_i, dim) array
        return concat_rows(steps, *raw) if steps else empty_rows(*raw)
    return steps


def _regular_steps(buf: bytes, pos: int, end: int) -> tuple[int, int, int] | None:
    """(count, stride, element bytes) if the FeatureList at buf[pos:end] is `count` steps, each a
    bytes_list of one element, all with identical headers (YouTube-8M rgb/audio); else None."""
    if pos >= end or buf[pos] != 0x0A:
        return None
    f_start, f_stop = read_len(buf, pos + 1, end)  # Feature
    if f_start >= f_stop or buf[f_start] != 0x0A:
        return None
    b_start, b_stop = read_len(buf, f_start + 1, f_stop)  # BytesList
    if b_stop != f_stop or b_start >= b_stop or buf[b_start] != 0x0A:
        return None
    v_start, v_stop = read_len(buf, b_start + 1, b_stop)  # its one element
    if v_stop != b_stop:
        return None
    count = regular_run(buf, pos, end, v_start, v_stop - v_start)
    return (count, f_stop - pos, v_stop - v_start) if count else None


def _raw_feature_list(buf: bytes, pos: int, end: int, raw) -> np.ndarray | None:
    """Fast path for `_regular_steps` layouts: one strided copy. None if the layout is anything else."""
    if pos >= end:
        return empty_rows(*raw)
    steps = _regular_steps(buf, pos, end)
    return None if steps is None else strided_rows(buf, pos, *steps, *raw)


def _check_feature_list(buf: bytes, pos: int, end: int) -> None:
    """Check a FeatureList that is not decoded (its key is not wanted) as protobuf would parse it."""
    if _regular_steps(buf, pos, end) is None:
        _feature_list(buf, pos, end, "", None, None)


def _parse_example(buf: bytes, pos: int, end: int, keys, options) -> dict:
    out: dict = {}
    while pos < end:
        tag, pos = next_tag(buf, pos, end)
        if tag == 0x0A:
            start, pos = read_len(buf, pos, end)
            _map(buf, start, pos, out, keys, options, _feature, _check_feature)
        else:
            pos = skip_field(buf, pos, end, tag, 0)
    _raise_refused(out)
    return out


def _parse_sequence_example(buf: bytes, pos: int, end: int, keys, options) -> tuple[dict, dict]:
    context: dict = {}
    lists: dict = {}
    while pos < end:
        tag, pos = next_tag(buf, pos, end)
        if tag == 0x0A:
            start, pos = read_len(buf, pos, end)
            _map(buf, start, pos, context, keys, options, _feature, _check_feature)
        elif tag == 0x12:
            start, pos = read_len(buf, pos, end)
            _map(buf, start, pos, lists, keys, options, _feature_list, _check_feature_list)
        else:
            pos = skip_field(buf, pos, end, tag, 0)
    _raise_refused(context, lists)
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
    except (_WrongType, WrongSize) as e:
        raise RecordError(str(e), path, offset) from None
    except Malformed as e:
        raise RecordError(f"protobuf parse error: {e}", path, offset) from None
    except IndexError:
        raise RecordError("protobuf parse error: truncated message", path, offset) from None
    except UnicodeDecodeError as e:
        raise RecordError(
            f"protobuf parse error: feature name is not UTF-8 ({e.reason})", path, offset
        ) from None
    except RecordError:
        raise
    except (ValueError, OverflowError) as e:  # numpy rejecting a malformed payload
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
        keys: decode only these features; the others are only checked (as protobuf parses them), not
            decoded. Absent keys are absent from the result.
        schema: `{key: "bytes" | "text" | "float" | "int64"}`; a non-empty feature of another type
            raises. `"text"` is a bytes_list decoded as UTF-8 (list[str]); an element that is not UTF-8
            raises.
        raw_dtypes: `{key: dtype}` or `{key: (dtype, dim)}`: that bytes_list holds raw little-endian
            vectors (one per element); it is returned as a `(num_elements, dim)` array of `dtype`,
            cut from the record with one copy. With `dim` given, the element size is checked and an
            empty list gives shape `(0, dim)`. E.g. QQ Browser frames: `{"frame_feature": ("<f2", 1536)}`.
        path, offset: where `data` came from, for the error message.

    Returns:
        `{key: value}`: list[bytes] for bytes_list (list[str] for "text"), float32 (n,) for float_list,
        int64 (n,) for int64_list.

    Raises:
        RecordError: what protobuf refuses to parse, a type that contradicts `schema` / `raw_dtypes`,
            raw elements of the wrong size, or text that is not UTF-8.
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
