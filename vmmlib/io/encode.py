"""Encode tf.train.Example and tf.train.SequenceExample without TensorFlow (the messages and the
decoder are in `vmmlib.io.example`). Used by the sample generators and the tests; the output is
byte-compatible with TensorFlow's parser (a fixture written by `tf.io.TFRecordWriter` round-trips).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["BytesList", "FloatList", "Int64List", "encode_example", "encode_sequence_example"]

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_U64 = (1 << 64) - 1


@dataclass(frozen=True, eq=False)
class BytesList:
    """An explicit bytes_list (str items are UTF-8 encoded); needed to write an empty list of bytes."""

    values: Sequence[bytes | str] = ()

    @classmethod
    def from_rows(cls, array: np.ndarray) -> BytesList:
        """One element per row of `array`, holding the row's raw little-endian bytes (how QQ Browser
        stores fp16 frames and YouTube-8M uint8 frames)."""
        array = np.asarray(array)
        if array.ndim < 2:
            raise ValueError(f"from_rows needs an array of rows (ndim >= 2), got shape {array.shape}")
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        return cls([row.tobytes() for row in array])


@dataclass(frozen=True, eq=False)
class FloatList:
    """An explicit float_list (stored as float32); needed to write an empty list of floats."""

    values: Sequence[float] | np.ndarray = ()


@dataclass(frozen=True, eq=False)
class Int64List:
    """An explicit int64_list; needed to write an empty list of ints."""

    values: Sequence[int] | np.ndarray = ()


FeatureValue = bytes | str | int | float | np.ndarray | Sequence[Any] | BytesList | FloatList | Int64List

_VARINT_1 = [bytes((i,)) for i in range(128)]


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _VARINT_1[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag byte, varint length, payload."""
    return tag + _varint(len(payload)) + payload


def _as_bytes(v) -> bytes:
    if isinstance(v, str):
        return v.encode("utf-8")
    if isinstance(v, (bytes, bytearray, memoryview, np.bytes_)):
        return bytes(v)
    raise TypeError(f"expected bytes or str, got {type(v).__name__}")


def _bytes_payload(values) -> bytes:
    parts = []
    for v in values:
        b = _as_bytes(v)
        parts += (b"\x0a", _varint(len(b)), b)
    return b"".join(parts)


def _float_payload(values) -> bytes:
    arr = np.asarray(values, dtype="<f4").reshape(-1)
    return _field(b"\x0a", arr.tobytes()) if arr.size else b""


def _int64_payload(values) -> bytes:
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "iub":
            raise TypeError(f"expected an integer array, got dtype {values.dtype}")
        values = values.reshape(-1).tolist()
    parts = []
    for v in values:
        v = int(v)
        if not _INT64_MIN <= v <= _INT64_MAX:
            raise OverflowError(f"{v} does not fit in int64")
        parts.append(_varint(v & _U64))
    return _field(b"\x0a", b"".join(parts)) if parts else b""


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer, np.bool_))  # bool is an int subclass


def _encode_feature(key: str, value: FeatureValue) -> bytes:
    """One serialized Feature message for `value` (see `encode_example` for the rules)."""
    try:
        if isinstance(value, BytesList):
            return _field(b"\x0a", _bytes_payload(value.values))
        if isinstance(value, FloatList):
            return _field(b"\x12", _float_payload(value.values))
        if isinstance(value, Int64List):
            return _field(b"\x1a", _int64_payload(value.values))
        if isinstance(value, (bytes, bytearray, memoryview, str, np.bytes_)):
            return _field(b"\x0a", _bytes_payload([value]))
        if _is_int(value):
            return _field(b"\x1a", _int64_payload([value]))
        if isinstance(value, (float, np.floating)):
            return _field(b"\x12", _float_payload([value]))
        if isinstance(value, np.ndarray):
            if value.dtype.kind in "iub":
                return _field(b"\x1a", _int64_payload(value))
            if value.dtype.kind == "f":
                return _field(b"\x12", _float_payload(value))
            if value.dtype.kind == "O" or value.dtype.kind == "U":
                return _field(b"\x0a", _bytes_payload(value.reshape(-1).tolist()))
            raise TypeError(f"arrays of dtype {value.dtype} are not supported (use BytesList for raw bytes)")
        if isinstance(value, (list, tuple)):
            if all(isinstance(v, (bytes, bytearray, memoryview, str, np.bytes_)) for v in value):
                return _field(b"\x0a", _bytes_payload(value))  # also [] -> empty bytes_list
            if all(_is_int(v) for v in value):
                return _field(b"\x1a", _int64_payload(value))
            if all(_is_int(v) or isinstance(v, (float, np.floating)) for v in value):
                return _field(b"\x12", _float_payload(value))
            raise TypeError("a list must hold only bytes/str, only ints, or only numbers")
        raise TypeError(f"unsupported value type {type(value).__name__}")
    except (TypeError, OverflowError) as e:
        raise type(e)(f"feature {key!r}: {e}") from None


def _encode_features(features: Mapping[str, FeatureValue]) -> bytes:
    parts = []
    for key, value in features.items():
        if not isinstance(key, str):
            raise TypeError(f"feature names must be str, got {key!r}")
        entry = _field(b"\x0a", key.encode("utf-8")) + _field(b"\x12", _encode_feature(key, value))
        parts.append(_field(b"\x0a", entry))
    return b"".join(parts)


def encode_example(features: Mapping[str, FeatureValue]) -> bytes:
    """Serialize a tf.train.Example.

    Value rules: bytes/str -> bytes_list of one (str as UTF-8); a list/tuple of bytes/str -> bytes_list;
    int/np.integer/bool -> int64_list of one; float -> float_list of one; np.ndarray of integer/bool dtype
    -> int64_list, of float dtype -> float_list (float32), flattened; a list of ints -> int64_list, of
    numbers with any float -> float_list; an empty list -> empty bytes_list. `BytesList`, `FloatList`,
    `Int64List` say the type explicitly (e.g. an empty float list).
    """
    return _field(b"\x0a", _encode_features(features))


def encode_sequence_example(
    context: Mapping[str, FeatureValue], feature_lists: Mapping[str, Sequence[FeatureValue]]
) -> bytes:
    """Serialize a tf.train.SequenceExample: `context` as in `encode_example`, and each feature list as
    a sequence of per-step values (each step one Feature, same rules)."""
    lists = []
    for key, steps in feature_lists.items():
        if not isinstance(key, str):
            raise TypeError(f"feature list names must be str, got {key!r}")
        body = b"".join(_field(b"\x0a", _encode_feature(key, step)) for step in steps)
        entry = _field(b"\x0a", key.encode("utf-8")) + _field(b"\x12", body)
        lists.append(_field(b"\x0a", entry))
    out = _field(b"\x0a", _encode_features(context))
    return out + _field(b"\x12", b"".join(lists))
