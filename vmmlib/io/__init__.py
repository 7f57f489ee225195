"""Record formats: TFRecord framing, tf.train.Example / SequenceExample, streaming, on-disk frame cache
(and where a data folder keeps it: `cache_dir_for`).

The streaming names (`stream_examples`, `TFRecordIterableDataset`, `plan_shards`) load on first use, so
reading records does not import torch.
"""

import importlib

from vmmlib.io.cache import FrameCache
from vmmlib.io.cache_location import cache_dir_for
from vmmlib.io.encode import BytesList, FloatList, Int64List, encode_example, encode_sequence_example
from vmmlib.io.example import decode_example, decode_sequence_example, read_examples
from vmmlib.io.tfrecord import (
    RecordError,
    TFRecordWriter,
    iter_tfrecord,
    iter_tfrecord_with_offsets,
    masked_crc32c,
    read_record_at,
    record_spans,
    tfrecord_index,
    write_tfrecord,
)

__all__ = [
    "BytesList",
    "FloatList",
    "FrameCache",
    "Int64List",
    "RecordError",
    "TFRecordIterableDataset",
    "TFRecordWriter",
    "cache_dir_for",
    "decode_example",
    "decode_sequence_example",
    "encode_example",
    "encode_sequence_example",
    "iter_tfrecord",
    "iter_tfrecord_with_offsets",
    "masked_crc32c",
    "plan_shards",
    "read_examples",
    "read_record_at",
    "record_spans",
    "stream_examples",
    "tfrecord_index",
    "write_tfrecord",
]

_LAZY = {
    "TFRecordIterableDataset": "vmmlib.io.stream",
    "plan_shards": "vmmlib.io.stream",
    "stream_examples": "vmmlib.io.stream",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
