"""Differential fuzz: vmmlib's Example / SequenceExample decoder against `google.protobuf` (upb).

Valid records are built as wire-format trees, mutated with a fixed seed (field numbers and wire types
changed, fields duplicated, dropped, reordered, unknown fields and groups inserted, map entries
tweaked, tags and lengths padded to non-canonical or over-long varints, lengths off by a few bytes,
strings made non-UTF-8, varints overflowed, then sometimes bytes flipped, inserted, deleted or the
record truncated), and each result is parsed by both. They must agree: protobuf raises DecodeError
exactly when vmmlib raises RecordError, and otherwise both give the same values.

"The same values", since vmmlib decodes to numpy and bytes: a bytes_list is the same list of bytes;
a float_list the same float32 bit patterns (any NaN matches any NaN: protobuf hands floats to Python
as doubles); an int64_list the same int64s; a Feature with no kind set is vmmlib's `[]`; a map holds
the same keys. The decode options are checked against the same reference: `keys` gives the reference
restricted to those keys (never accepting what protobuf refuses), `raw_dtypes` the rows of the joined
bytes elements (or RecordError when they differ in size or are not bytes), and schema `"text"` the
UTF-8 decoded strings (or RecordError naming the key when an element is not UTF-8).

The message classes are built here from a descriptor (tensorflow is not installed); protobuf is a
test-only dependency.
"""

import copy
import random
import time

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from vmmlib.io import (
    RecordError,
    decode_example,
    decode_sequence_example,
    read_examples,
    tfrecord_index,
    write_tfrecord,
)

CASES = 3000  # mutated records; each is parsed as an Example and as a SequenceExample
_F = descriptor_pb2.FieldDescriptorProto


def _message_classes() -> dict:
    """tf.train.{Example, SequenceExample} (tensorflow/core/example/{example,feature}.proto, proto3)."""
    fd = descriptor_pb2.FileDescriptorProto(name="vmm_fuzz_example.proto", package="vmmfuzz", syntax="proto3")
    repeated, optional = _F.LABEL_REPEATED, _F.LABEL_OPTIONAL

    def message(name, fields, oneof=None):
        m = fd.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            f = m.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                f.type_name = ".vmmfuzz." + type_name
            if oneof:
                f.oneof_index = 0
        if oneof:
            m.oneof_decl.add(name=oneof)
        return m

    def map_entry(parent, name, value_type):
        entry = parent.nested_type.add(name=name)
        entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=optional)
        entry.field.add(name="value", number=2, type=_F.TYPE_MESSAGE, label=optional, type_name=value_type)
        entry.options.map_entry = True

    message("BytesList", [("value", 1, _F.TYPE_BYTES, repeated, None)])
    message("FloatList", [("value", 1, _F.TYPE_FLOAT, repeated, None)])  # proto3: packed by default
    message("Int64List", [("value", 1, _F.TYPE_INT64, repeated, None)])
    lists = [("bytes_list", 1, "BytesList"), ("float_list", 2, "FloatList"), ("int64_list", 3, "Int64List")]
    message("Feature", [(n, i, _F.TYPE_MESSAGE, optional, t) for n, i, t in lists], oneof="kind")
    features = message("Features", [("feature", 1, _F.TYPE_MESSAGE, repeated, "Features.FeatureEntry")])
    map_entry(features, "FeatureEntry", ".vmmfuzz.Feature")
    message("FeatureList", [("feature", 1, _F.TYPE_MESSAGE, repeated, "Feature")])
    lists_map = message(
        "FeatureLists", [("feature_list", 1, _F.TYPE_MESSAGE, repeated, "FeatureLists.FeatureListEntry")]
    )
    map_entry(lists_map, "FeatureListEntry", ".vmmfuzz.FeatureList")
    message("Example", [("features", 1, _F.TYPE_MESSAGE, optional, "Features")])
    message(
        "SequenceExample",
        [
            ("context", 1, _F.TYPE_MESSAGE, optional, "Features"),
            ("feature_lists", 2, _F.TYPE_MESSAGE, optional, "FeatureLists"),
        ],
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return {
        n: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"vmmfuzz.{n}"))
        for n in ("Example", "SequenceExample")
    }


PB = _message_classes()


# ------------------------------------------------------------------ wire-format trees

# A node is [kind, field number, value, overrides]: kind "varint" (int), "i32"/"i64" (raw bytes),
# "len" (bytes, or a list of nodes = a nested message), "group" (list of nodes), "raw" (bytes written
# as they are, no tag). Overrides: wire (another wire type on the tag), tag_pad / len_pad / pad (extra
# varint bytes: non-canonical, or too long), len_delta (a wrong length), end (the end-group number).
_WIRE = {"varint": 0, "i64": 1, "len": 2, "group": 3, "i32": 5}
_U64 = (1 << 64) - 1


def _varint(n: int, pad: int = 0) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    if pad:
        out[-1] |= 0x80
        out += b"\x80" * (pad - 1) + b"\x00"
    return bytes(out)


def _node(kind, number, value):
    return [kind, number, value, {}]


def _serialize(nodes) -> bytes:
    out = bytearray()
    for kind, number, value, o in nodes:
        if kind == "raw":
            out += value
            continue
        out += _varint(((number << 3) | o.get("wire", _WIRE[kind])) & 0xFFFFFFFFFF, o.get("tag_pad", 0))
        if kind == "varint":
            out += _varint(value, o.get("pad", 0))
        elif kind in ("i32", "i64"):
            out += value
        elif kind == "len":
            payload = _serialize(value) if isinstance(value, list) else value
            out += _varint(max(0, len(payload) + o.get("len_delta", 0)), o.get("len_pad", 0)) + payload
        else:  # group
            out += _serialize(value) + _varint((o.get("end", number) << 3) | 4)
    return bytes(out)


def _bytes_feature(values):
    return [_node("len", 1, [_node("len", 1, v) for v in values])]


def _int64_feature(values, packed=True):
    if packed:
        return [_node("len", 3, [_node("len", 1, b"".join(_varint(v & _U64) for v in values))])]
    return [_node("len", 3, [_node("varint", 1, v & _U64) for v in values])]


def _float_feature(values, packed=True):
    data = np.asarray(values, "<f4")
    if packed:
        return [_node("len", 2, [_node("len", 1, data.tobytes())])]
    return [_node("len", 2, [_node("i32", 1, v.tobytes()) for v in data])]


def _entry(key, value_nodes):
    return _node(
        "len",
        1,
        [_node("len", 1, key.encode() if isinstance(key, str) else key), _node("len", 2, value_nodes)],
    )


def _random_feature(rng):
    kind = rng.randrange(4)
    n = rng.choice([0, 1, 2, 3, 5, 40])
    if kind == 0:
        size = rng.choice([0, 1, 4, 16])
        same = rng.random() < 0.5  # equally sized elements: the decoder's strided fast path
        return _bytes_feature([rng.randbytes(size if same else rng.randrange(20)) for _ in range(n)])
    if kind == 1:
        return _int64_feature(
            [rng.randrange(-(2**63), 2**63) >> rng.randrange(64) for _ in range(n)], rng.random() < 0.8
        )
    if kind == 2:
        return _float_feature([rng.uniform(-1e6, 1e6) for _ in range(n)], rng.random() < 0.8)
    return []  # a Feature with no kind


def _seed_example(rng):
    frames = rng.randrange(0, 4)
    entries = [
        _entry("id", _bytes_feature([str(rng.randrange(10**12)).encode()])),
        _entry("title", _bytes_feature([rng.choice(["标题", "title", "ü", ""]).encode()])),
        _entry("frame_feature", _bytes_feature([rng.randbytes(16) for _ in range(frames)])),
        _entry("tag_id", _int64_feature([rng.randrange(10000) for _ in range(rng.randrange(5))])),
        _entry("category_id", _int64_feature([rng.randrange(300)])),
    ]
    entries += [_entry(f"x{i}", _random_feature(rng)) for i in range(rng.randrange(3))]
    rng.shuffle(entries)
    return [_node("len", 1, entries)]


def _seed_sequence_example(rng):
    steps = rng.randrange(0, 4)
    context = [
        _entry("id", _bytes_feature([rng.randbytes(4).hex().encode()])),
        _entry("labels", _int64_feature([rng.randrange(3862) for _ in range(rng.randrange(4))])),
        _entry("segment_scores", _float_feature([1.0, 0.0][: rng.randrange(3)])),
        _entry(f"c{rng.randrange(3)}", _random_feature(rng)),
    ]
    lists = [
        _entry("rgb", [_node("len", 1, _bytes_feature([rng.randbytes(16)])) for _ in range(steps)]),
        _entry("audio", [_node("len", 1, _bytes_feature([rng.randbytes(4)])) for _ in range(steps)]),
        _entry(
            f"l{rng.randrange(3)}", [_node("len", 1, _random_feature(rng)) for _ in range(rng.randrange(3))]
        ),
    ]
    return [_node("len", 1, context), _node("len", 2, lists)]


# ------------------------------------------------------------------ mutations


def _all_nodes(nodes, out):
    for i, node in enumerate(nodes):
        out.append((nodes, i))
        if node[0] in ("len", "group") and isinstance(node[2], list):
            _all_nodes(node[2], out)
    return out


_BAD_UTF8 = [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"ab\xe4\xb8", b"\x80"]


def _unknown_field(rng):
    number = rng.choice([4, 5, 15, 16, 100, 2**29 - 1])
    kind = rng.choice(["varint", "i32", "i64", "len", "group", "group", "raw"])
    if kind == "varint":
        return _node("varint", number, rng.choice([0, 1, 300, _U64]))
    if kind == "i32":
        return _node("i32", number, rng.randbytes(4))
    if kind == "i64":
        return _node("i64", number, rng.randbytes(8))
    if kind == "len":
        return _node("len", number, rng.randbytes(rng.randrange(6)))
    if kind == "group":
        inner = [_unknown_field(rng) for _ in range(rng.randrange(3))]
        node = _node("group", number, inner)
        if rng.random() < 0.3:
            node[3]["end"] = rng.choice([0, 1, number + 1])
        return node
    # a lone end-group tag, a field number 0, a wire type 6/7, a deep stack of groups
    return _node(
        "raw", 0, rng.choice([b"\x0c", b"\x00\x00", b"\x0e", b"\x0f", b"\x1b" * 101 + b"\x1c" * 101])
    )


def _mutate_entry(entry, rng):
    """Map-entry tweaks: the cases where upb drops, merges or overrides."""
    fields = entry[2]
    op = rng.randrange(6)
    if op == 0 and fields:
        fields.pop(rng.randrange(len(fields)))  # no key ("") or no value (empty message)
    elif op == 1 and fields:
        fields.insert(rng.randrange(len(fields) + 1), copy.deepcopy(rng.choice(fields)))  # repeated key/value
    elif op == 2:
        fields.insert(rng.randrange(len(fields) + 1), _unknown_field(rng))  # upb drops the entry
    elif op == 3:
        fields.reverse()
    elif op == 4:
        fields.append(
            _node("len", rng.choice([1, 2]), _bytes_feature([b"other"]) if rng.random() < 0.5 else b"k2")
        )
    elif fields:
        rng.choice(fields)[3]["wire"] = rng.choice([0, 1, 5])  # key or value with a wrong wire type


def _mutate_tree(nodes, rng):
    targets = _all_nodes(nodes, [])
    if not targets:
        nodes.append(_unknown_field(rng))
        return
    parent, i = rng.choice(targets)
    node = parent[i]
    op = rng.randrange(14)
    if op == 0:
        node[1] = rng.choice([0, 1, 2, 3, 4, 5, 15, 2**29 - 1, 2**29])
    elif op == 1:
        node[3]["wire"] = rng.randrange(8)
    elif op == 2:
        parent.insert(i, copy.deepcopy(node))
    elif op == 3:
        parent.pop(i)
    elif op == 4 and len(parent) > 1:
        j = rng.randrange(len(parent))
        parent[i], parent[j] = parent[j], parent[i]
    elif op == 5:
        parent.insert(rng.randrange(len(parent) + 1), _unknown_field(rng))
    elif op == 6:
        node[3]["tag_pad"] = rng.choice([1, 2, 3, 4, 5])  # 5: a 6-byte tag
    elif op == 7 and node[0] == "len":
        node[3]["len_pad"] = rng.choice([1, 2, 3, 4, 5])
    elif op == 8 and node[0] == "len":
        node[3]["len_delta"] = rng.choice([-3, -1, 1, 2])
    elif op == 9 and node[0] == "len" and not isinstance(node[2], list):
        node[2] = (
            rng.choice(_BAD_UTF8) + node[2]
            if rng.random() < 0.7
            else node[2][: rng.randrange(len(node[2]) + 1)]
        )
    elif op == 10 and node[0] == "varint":
        node[2] = rng.choice([0, 2**63, _U64, (1 << 64) + 5, 1 << 69])
        node[3]["pad"] = rng.choice([0, 0, 1, 9])
    elif op == 11 and node[0] == "len" and isinstance(node[2], list) and node[2] and node[2][0][0] == "len":
        _mutate_entry(node, rng)
    elif op == 12 and node[0] == "len" and isinstance(node[2], list):
        node[2] = _serialize(node[2])  # from here on its bytes are mutated as bytes
    else:
        for parent, i in targets:  # some map entry: tweak it (the findings' main source)
            if parent[i][0] == "len" and isinstance(parent[i][2], list) and len(parent[i][2]) == 2:
                if rng.random() < 0.3:
                    _mutate_entry(parent[i], rng)
                    break


def _mutate_bytes(data: bytes, rng) -> bytes:
    if not data:
        return data
    op = rng.randrange(4)
    at = rng.randrange(len(data))
    if op == 0:
        return data[:at] + bytes([rng.randrange(256)]) + data[at + 1 :]
    if op == 1:
        return data[:at]
    if op == 2:
        return data[:at] + rng.randbytes(rng.randrange(1, 4)) + data[at:]
    return data[:at] + data[at + 1 :]


def _fuzz_records(count: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    records = []
    for i in range(count):
        tree = _seed_example(rng) if i % 2 == 0 else _seed_sequence_example(rng)
        for _ in range(rng.choice([1, 1, 2, 3])):
            _mutate_tree(tree, rng)
        data = _serialize(tree)
        if rng.random() < 0.25:
            data = _mutate_bytes(data, rng)
        records.append(data)
    return records


# ------------------------------------------------------------------ the reference's values


def _feature_value(feature):
    kind = feature.WhichOneof("kind")
    if kind is None:
        return None, []
    values = getattr(feature, kind).value
    if kind == "bytes_list":
        return "bytes", list(values)
    if kind == "float_list":
        return "float", np.array(values, np.float32)
    return "int64", np.array(values, np.int64)


def _reference(data: bytes, sequence: bool):
    """(context, feature_lists) of protobuf's parse, each value as (kind, value); None if it refuses."""
    try:
        message = PB["SequenceExample" if sequence else "Example"].FromString(data)
    except DecodeError:
        return None
    if not sequence:
        return {k: _feature_value(v) for k, v in message.features.feature.items()}, {}
    context = {k: _feature_value(v) for k, v in message.context.feature.items()}
    lists = {k: [_feature_value(f) for f in v.feature] for k, v in message.feature_lists.feature_list.items()}
    return context, lists


def _same_value(got, want) -> bool:
    kind, value = want
    if kind in (None, "bytes"):
        return type(got) is list and got == value
    if not isinstance(got, np.ndarray) or got.dtype != value.dtype or got.shape != value.shape:
        return False
    if kind == "float":
        nan = np.isnan(value)
        return np.array_equal(np.isnan(got), nan) and np.array_equal(
            got[~nan].view(np.uint32), value[~nan].view(np.uint32)
        )
    return np.array_equal(got, value)


def _same_map(got: dict, want: dict, lists: bool = False) -> bool:
    if got.keys() != want.keys():
        return False
    if lists:
        return all(len(got[k]) == len(want[k]) and all(map(_same_value, got[k], want[k])) for k in want)
    return all(_same_value(got[k], want[k]) for k in want)


def _ours(data: bytes, sequence: bool, **options):
    """vmmlib's decode as (context, feature_lists), or None if it raises RecordError."""
    try:
        if sequence:
            return decode_sequence_example(data, **options)
        return decode_example(data, **options), {}
    except RecordError:
        return None


def _raw_rows_expected(steps):
    """What raw_dtypes={key: np.uint8} must give for these (kind, value) steps: rows, or None = RecordError."""
    elements = []
    for kind, value in steps:
        if kind in ("float", "int64") and len(value):
            return None
        if kind == "bytes":
            elements += value
    if len({len(e) for e in elements}) > 1:
        return None
    width = len(elements[0]) if elements else 0
    return np.frombuffer(b"".join(elements), np.uint8).reshape(len(elements), width)


def _text_expected(kind_value):
    kind, value = kind_value
    if kind in ("float", "int64") and len(value):
        return None
    try:
        return [v.decode("utf-8") for v in value] if kind == "bytes" else []
    except UnicodeDecodeError:
        return None


def _check_options(data: bytes, sequence: bool, want) -> None:
    """keys / raw_dtypes / text: the reference decides, vmmlib's options only refine its values."""
    keys = ["id", "rgb", "tag_id"]
    got = _ours(data, sequence, keys=keys)
    if want is None:
        assert got is None, "keys accepted a record protobuf refuses"
        assert _ours(data, sequence, raw_dtypes={"rgb": np.uint8, "frame_feature": np.uint8}) is None
        return
    assert got is not None, "keys refused a record protobuf parses"
    assert _same_map(got[0], {k: v for k, v in want[0].items() if k in keys})
    assert _same_map(got[1], {k: v for k, v in want[1].items() if k in keys}, lists=True)

    key = "rgb" if sequence else "frame_feature"
    steps = want[1].get(key) if sequence else ([want[0][key]] if key in want[0] else None)
    got = _ours(data, sequence, keys=[key], raw_dtypes={key: np.uint8})
    if steps is not None:
        rows = _raw_rows_expected(steps)
        if rows is None:
            assert got is None, "raw_dtypes accepted mixed element sizes or a numeric list"
        else:
            value = (got[1] if sequence else got[0])[key]
            assert value.dtype == np.uint8 and np.array_equal(value, rows) and value.shape == rows.shape

    got = _ours(data, sequence, keys=["id", "title"], schema={"id": "text", "title": "text"})
    expected = {k: _text_expected(want[0][k]) for k in ("id", "title") if k in want[0]}
    if any(v is None for v in expected.values()):
        assert got is None, "text accepted non-UTF-8 bytes or a numeric list"
    else:
        assert got[0] == expected


def test_decoder_agrees_with_protobuf_on_mutated_records():
    records = _fuzz_records(CASES)
    started = time.perf_counter()
    outcomes = {"both parse": 0, "both refuse": 0}
    for i, data in enumerate(records):
        for sequence in (False, True):
            want = _reference(data, sequence)
            got = _ours(data, sequence)
            where = f"case {i} ({'SequenceExample' if sequence else 'Example'}): {data.hex()}"
            assert (got is None) == (want is None), (
                f"{'vmmlib' if got is None else 'protobuf'} refuses {where}"
            )
            if want is not None:
                assert _same_map(got[0], want[0]) and _same_map(got[1], want[1], lists=True), where
            outcomes["both refuse" if want is None else "both parse"] += 1
            _check_options(data, sequence, want)
    elapsed = time.perf_counter() - started
    # the mutations must reach both outcomes often, or the comparison proves little
    assert min(outcomes.values()) > CASES // 4, outcomes
    assert elapsed < 30, f"{2 * CASES} comparisons took {elapsed:.1f} s"


def test_read_examples_names_file_and_offset_for_every_refused_record(tmp_path):
    """In a file, each record protobuf refuses is a RecordError at that record's offset; the rest read."""
    records = _fuzz_records(400, seed=1)
    path = tmp_path / "fuzz.tfrecords"
    write_tfrecord(path, records)
    offsets = tfrecord_index(path)
    refused = 0
    for i, data in enumerate(records):
        want = _reference(data, sequence=True)
        try:
            list(read_examples(path, sequence=True, shard=(i, len(records))))
        except RecordError as e:
            assert want is None, f"record {i}: {e}"
            assert e.path == str(path) and e.offset == offsets[i], str(e)
            assert str(e).startswith(f"{path}: record at byte offset {offsets[i]}: ")
            refused += 1
        else:
            assert want is not None, f"record {i} is read although protobuf refuses it"
    assert refused > 50


def _field(tag: int, payload: bytes) -> bytes:
    return bytes([tag]) + _varint(len(payload)) + payload


@pytest.mark.parametrize("key", ["id", "title"])
def test_non_utf8_text_is_a_record_error_naming_key_file_and_offset(tmp_path, key):
    """Old failure: a non-UTF-8 id or title raised a bare UnicodeDecodeError in the readers. Bytes stay
    bytes (as protobuf keeps them); asked for as text, they are a RecordError with file and offset."""
    bad = b"v\xff1"
    record = _serialize(
        [_node("len", 1, [_entry(key, _bytes_feature([bad])), _entry("other", _bytes_feature([b"x"]))])]
    )
    path = tmp_path / "text.tfrecords"
    good = _serialize([_node("len", 1, [_entry(key, _bytes_feature(["ok ü".encode()]))])])
    write_tfrecord(path, [good, record])
    assert (
        decode_example(record)[key]
        == [bad]
        == list(PB["Example"].FromString(record).features.feature[key].bytes_list.value)
    )
    with pytest.raises(RecordError, match=f"feature '{key}' is not UTF-8 text") as e:
        list(read_examples(path, schema={key: "text"}))
    assert e.value.path == str(path) and e.value.offset == tfrecord_index(path)[1]
    assert next(read_examples(path, schema={key: "text"}))[key] == ["ok ü"]
    # a refused value replaced by a later entry of the same key is no error: the last entry counts
    replaced = _serialize(
        [_node("len", 1, [_entry(key, _bytes_feature([bad])), _entry(key, _bytes_feature([b"fine"]))])]
    )
    assert decode_example(replaced, schema={key: "text"})[key] == ["fine"]


@pytest.mark.parametrize("schema", [None, {"frame_feature": "bytes"}])
def test_an_empty_feature_decodes_as_empty_frames(schema):
    """Old failure: `Feature{}` on frame_feature with a schema and raw_dtypes raised a bare `KeyError: 0`."""
    record = _serialize([_node("len", 1, [_entry("frame_feature", [])])])
    out = decode_example(record, schema=schema, raw_dtypes={"frame_feature": ("<f2", 8)})
    assert out["frame_feature"].shape == (0, 8) and out["frame_feature"].dtype == np.float16
    context, lists = decode_sequence_example(
        _serialize([_node("len", 2, [_entry("rgb", [_node("len", 1, [])] * 2)])]),
        schema={"rgb": "bytes"},
        raw_dtypes={"rgb": (np.uint8, 4)},
    )
    assert lists["rgb"].shape == (0, 4)


def _entry_of(*fields):
    return _node("len", 1, list(fields))


_KEY, _XY = _node("len", 1, b"k"), _node("len", 2, _bytes_feature([b"xy"]))


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        (
            [
                _entry_of(_KEY, _XY),
                _entry_of(_KEY, _node("len", 2, _int64_feature([7])), _node("varint", 3, 1)),
            ],
            {"k": [b"xy"]},
        ),  # unknown field: dropped
        ([_entry_of(_XY)], {"": [b"xy"]}),  # no key: the empty name
        ([_entry_of(_KEY)], {"k": []}),  # no value: an empty Feature
        ([_entry_of(_KEY, _XY, _node("len", 2, _bytes_feature([b"zz"])))], {"k": [b"xy", b"zz"]}),  # merged
        ([_entry_of(_node("len", 1, b"j"), _KEY, _XY)], {"k": [b"xy"]}),  # two keys: the last
        ([_entry_of(_node("varint", 1, 5), _XY)], {}),  # a key of the wrong wire type: dropped
    ],
)
def test_malformed_map_entries_decode_as_protobuf_does(entries, expected):
    """Old failure (13 of 6,000): map entries upb drops, merges or overrides were decoded otherwise."""
    data = _serialize([_node("len", 1, entries)])
    want = _reference(data, sequence=False)[0]
    assert {k: v for k, (_, v) in want.items()} == expected
    assert _same_map(decode_example(data), want)


@pytest.mark.parametrize(
    "data",
    [
        _field(0x0A, b"\x00\x01"),  # field number 0
        _field(0x0A, b"\x1b\x08\x01\x24"),  # group 3 closed as group 4
        _field(0x0A, b"\x1b" * 100 + b"\x1c" * 100),  # groups nested deeper than upb allows
        _field(0x0A, b"\x0a\x85\x80\x80\x80\x80\x00"),  # a 6-byte length prefix
        _field(0x0A, b"\xf8\xff\xff\xff\x1f\x00"),  # a tag above 2**32 - 1
        _field(0x0A, _field(0x0A, _field(0x0A, b"k") + _field(0x12, _field(0x12, _field(0x0A, b"abc"))))),
    ],
)
def test_what_protobuf_refuses_is_refused(data):
    """Old failure (5 of 6,000): records protobuf refuses were accepted."""
    assert _reference(data, sequence=False) is None
    with pytest.raises(RecordError, match="protobuf parse error"):
        decode_example(data)
