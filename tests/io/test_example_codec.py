"""Example / SequenceExample encode and decode: every value type, hand-built wire bytes, a protobuf
reference, TensorFlow-written fixtures, the `tfrecord` package both ways, and malformed input."""

import json
from pathlib import Path

import numpy as np
import pytest
from tfrecord import example_pb2  # the protobuf classes of the `tfrecord` package: a reference parser

from vmmlib.io import (
    BytesList,
    FloatList,
    Int64List,
    RecordError,
    decode_example,
    decode_sequence_example,
    encode_example,
    encode_sequence_example,
    read_examples,
    tfrecord_index,
    write_tfrecord,
)

FIXTURES = Path(__file__).parent / "fixtures"


def _assert_same(got, want):
    assert got.keys() == want.keys()
    for key in want:
        g, w = got[key], want[key]
        if isinstance(w, np.ndarray):
            assert isinstance(g, np.ndarray) and g.dtype == w.dtype and g.shape == w.shape, key
            np.testing.assert_array_equal(g, w, err_msg=key)
        else:
            assert g == w, key


def test_every_value_type_round_trips():
    features = {
        "bytes": b"raw\x00",
        "str": "标题 title",
        "bytes_list": [b"a\x00\x00", b"\x00", b"", b"x\x00y\x00"],
        "str_tuple": ("ü", "ß"),
        "int": 7,
        "np_int": np.int32(-3),
        "bool": True,
        "float": 0.25,
        "np_float": np.float32(1.5),
        "int_array": np.arange(6, dtype=np.int16).reshape(2, 3),
        "uint8_array": np.array([0, 255], np.uint8),
        "float_array": np.array([[0.5, -2.0]], np.float64),
        "int_list": [1, -1, 2**63 - 1, -(2**63), 300],
        "mixed_numbers": [1, 2.5],
        "empty_bytes": BytesList([]),
        "empty_float": FloatList([]),
        "empty_int": Int64List([]),
        "empty_plain_list": [],
        "explicit_float": FloatList([1, 2]),
    }
    want = {
        "bytes": [b"raw\x00"],
        "str": ["标题 title".encode()],
        "bytes_list": [b"a\x00\x00", b"\x00", b"", b"x\x00y\x00"],
        "str_tuple": ["ü".encode(), "ß".encode()],
        "int": np.array([7], np.int64),
        "np_int": np.array([-3], np.int64),
        "bool": np.array([1], np.int64),
        "float": np.array([0.25], np.float32),
        "np_float": np.array([1.5], np.float32),
        "int_array": np.arange(6, dtype=np.int64),
        "uint8_array": np.array([0, 255], np.int64),
        "float_array": np.array([0.5, -2.0], np.float32),
        "int_list": np.array([1, -1, 2**63 - 1, -(2**63), 300], np.int64),
        "mixed_numbers": np.array([1, 2.5], np.float32),
        "empty_bytes": [],
        "empty_float": np.empty(0, np.float32),
        "empty_int": np.empty(0, np.int64),
        "empty_plain_list": [],
        "explicit_float": np.array([1, 2], np.float32),
    }
    data = encode_example(features)
    _assert_same(decode_example(data), want)
    # the protobuf reference reads the same values
    ref = example_pb2.Example.FromString(data).features.feature
    assert list(ref["bytes_list"].bytes_list.value) == want["bytes_list"]
    assert list(ref["int_list"].int64_list.value) == want["int_list"].tolist()
    assert ref["empty_float"].WhichOneof("kind") == "float_list"


def test_hand_built_wire_bytes_decode():
    # Example { features { feature { key: "a" value { int64_list { 1, 300 } } }   (unpacked varints)
    #                      feature { key: "bb" value { bytes_list { "x\0", "" } } }
    #                      feature { key: "f" value { float_list { 1.0 } } }        (unpacked fixed32)
    #                      feature { key: "p" value { int64_list { -1 } } }         (packed, 10-byte varint)
    #                      unknown field 15 (varint 5) } }
    int64_list = b"\x08\x01" + b"\x08\xac\x02"  # field 1 varint 1; field 1 varint 300 (0xac 0x02)
    feature_a = b"\x1a" + bytes([len(int64_list)]) + int64_list  # Feature.int64_list = 3 (tag 0x1a)
    entry_a = b"\x0a\x01a" + b"\x12" + bytes([len(feature_a)]) + feature_a
    bytes_list = b"\x0a\x02x\x00" + b"\x0a\x00"
    feature_b = b"\x0a" + bytes([len(bytes_list)]) + bytes_list
    entry_b = b"\x0a\x02bb" + b"\x12" + bytes([len(feature_b)]) + feature_b
    float_list = b"\x0d" + b"\x00\x00\x80\x3f"  # field 1 fixed32: 1.0f little-endian
    feature_f = b"\x12" + bytes([len(float_list)]) + float_list
    entry_f = b"\x0a\x01f" + b"\x12" + bytes([len(feature_f)]) + feature_f
    minus_one = b"\xff" * 9 + b"\x01"
    int64_packed = b"\x0a" + bytes([len(minus_one)]) + minus_one
    feature_p = b"\x1a" + bytes([len(int64_packed)]) + int64_packed
    entry_p = b"\x0a\x01p" + b"\x12" + bytes([len(feature_p)]) + feature_p
    features = (
        b"".join(b"\x0a" + bytes([len(e)]) + e for e in (entry_a, entry_b, entry_f, entry_p)) + b"\x78\x05"
    )
    example = b"\x0a" + bytes([len(features)]) + features
    _assert_same(
        decode_example(example),
        {
            "a": np.array([1, 300], np.int64),
            "bb": [b"x\x00", b""],
            "f": np.array([1.0], np.float32),
            "p": np.array([-1], np.int64),
        },
    )
    # the reference agrees, and our encoder writes what protobuf writes for the same message
    ref = example_pb2.Example.FromString(example)
    assert list(ref.features.feature["a"].int64_list.value) == [1, 300]
    assert encode_example({"x": [1, 300]}) == example_pb2.Example(
        features=example_pb2.Features(
            feature={"x": example_pb2.Feature(int64_list=example_pb2.Int64List(value=[1, 300]))}
        )
    ).SerializeToString(deterministic=True)


def _random_reference_example(rng):
    """A random Example built with the protobuf classes, and what it must decode to."""
    feature, want = {}, {}
    for i in range(int(rng.integers(0, 8))):
        key = f"k{i}_{'é' * int(rng.integers(0, 2))}"
        n = int(rng.integers(0, 70))
        kind = rng.integers(3)
        if kind == 0:
            values = [rng.bytes(int(rng.integers(0, 300))) for _ in range(n)]
            feature[key] = example_pb2.Feature(bytes_list=example_pb2.BytesList(value=values))
            want[key] = values
        elif kind == 1:
            values = rng.standard_normal(n).astype(np.float32)
            feature[key] = example_pb2.Feature(float_list=example_pb2.FloatList(value=values.tolist()))
            want[key] = values
        else:
            full = rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64, endpoint=True)
            values = full >> rng.integers(0, 64, n)  # every magnitude: 1- to 10-byte varints
            feature[key] = example_pb2.Feature(int64_list=example_pb2.Int64List(value=values.tolist()))
            want[key] = values
    return example_pb2.Example(features=example_pb2.Features(feature=feature)), want


def test_decoder_matches_protobuf_on_random_examples():
    rng = np.random.default_rng(0)
    for _ in range(300):
        message, want = _random_reference_example(rng)
        data = message.SerializeToString()
        _assert_same(decode_example(data), want)
        # decoded values carry their type (even when empty), so re-encoding them gives the same message
        assert example_pb2.Example.FromString(encode_example(decode_example(data))) == message


def test_keys_restrict_decoding_and_absent_keys_are_absent():
    data = encode_example({"id": "v1", "frames": [b"\x01" * 6] * 3, "tag_id": [5, 6]})
    assert decode_example(data, keys=["id", "missing"]) == {"id": [b"v1"]}
    assert decode_example(data, keys="tag_id")["tag_id"].tolist() == [5, 6]


def test_schema_rejects_a_wrong_type_but_accepts_empty_lists():
    data = encode_example({"tag_id": [1.5, 2.0], "title": BytesList([]), "none": []})
    with pytest.raises(RecordError, match="'tag_id' is float_list, schema says int64"):
        decode_example(data, schema={"tag_id": "int64"})
    out = decode_example(data, schema={"title": "float", "none": "int64"})
    assert out["title"].dtype == np.float32 and out["none"].dtype == np.int64 and len(out["none"]) == 0
    with pytest.raises(ValueError, match="schema types"):
        decode_example(data, schema={"tag_id": "int"})


def test_read_examples_names_file_and_offset_of_a_wrong_type(tmp_path):
    p = tmp_path / "x.tfrecords"
    write_tfrecord(p, [encode_example({"tag_id": [1]}), encode_example({"tag_id": ["oops"]})])
    with pytest.raises(RecordError) as e:
        list(read_examples(p, schema={"tag_id": "int64"}))
    assert e.value.offset == tfrecord_index(p)[1] and e.value.path == str(p)
    assert "'tag_id' is bytes_list, schema says int64" in str(e.value)


@pytest.mark.parametrize(
    "data",
    [
        encode_example({"id": "abc", "x": [1, 2, 3]})[:-2],  # truncated
        b"\x0a\x05\x0a\x03\x0a\x01",  # entry claims more bytes than its message has
        b"\x0a\x02\x0b\x00",  # wire type 3 (groups) is not supported
        b"\x0a\x04\x0a\x02\x0a\xff",  # varint cut mid-way
        b"\x0a\x06\x0a\x04\x0a\x02\xff\xfe",  # feature name that is not UTF-8
    ],
)
def test_malformed_protobuf_raises_record_error(data, tmp_path):
    with pytest.raises(RecordError, match="protobuf parse error"):
        decode_example(data)
    p = tmp_path / "bad.tfrecords"
    write_tfrecord(p, [encode_example({"ok": 1}), data])
    with pytest.raises(RecordError, match="protobuf parse error") as e:
        list(read_examples(p))
    assert e.value.offset == tfrecord_index(p)[1] and str(p) in str(e.value)


def test_raw_dtypes_cut_frames_into_an_array():
    rng = np.random.default_rng(1)
    frames = rng.standard_normal((5, 16)).astype("<f2")
    frames[2, -1] = 0.0  # trailing NUL bytes in one element
    data = encode_example({"frame_feature": BytesList.from_rows(frames), "id": "v"})
    out = decode_example(data, raw_dtypes={"frame_feature": (np.float16, 16)})
    assert out["frame_feature"].dtype == np.float16 and out["frame_feature"].flags.writeable
    np.testing.assert_array_equal(out["frame_feature"], frames)
    assert decode_example(data)["frame_feature"] == [f.tobytes() for f in frames]
    empty = decode_example(encode_example({"frame_feature": []}), raw_dtypes={"frame_feature": ("<f2", 16)})
    assert empty["frame_feature"].shape == (0, 16)
    with pytest.raises(RecordError, match="raw element of 32 bytes, expected 64"):
        decode_example(data, raw_dtypes={"frame_feature": (np.float32, 16)})
    ragged = encode_example({"frame_feature": [b"\x00" * 4, b"\x00" * 6]})
    with pytest.raises(RecordError, match="different sizes"):
        decode_example(ragged, raw_dtypes={"frame_feature": np.uint8})


def test_frames_in_an_irregular_layout_decode_the_same():
    """A bytes_list whose elements are not laid out at a fixed stride (an unknown field in between)
    takes the general path and gives the same result."""
    element = b"\x01\x02\x03\x04"
    bytes_list = b"\x0a\x04" + element + b"\x10\x07" + b"\x0a\x04" + element[::-1]  # field 2 varint inside
    feature = b"\x0a" + bytes([len(bytes_list)]) + bytes_list
    entry = b"\x0a\x01f" + b"\x12" + bytes([len(feature)]) + feature
    example = b"\x0a" + bytes([len(entry) + 2]) + b"\x0a" + bytes([len(entry)]) + entry
    assert decode_example(example)["f"] == [element, element[::-1]]
    rows = decode_example(example, raw_dtypes={"f": np.uint8})["f"]
    np.testing.assert_array_equal(rows, [[1, 2, 3, 4], [4, 3, 2, 1]])


def test_a_bytes_list_that_only_looks_regular_is_parsed_element_by_element():
    """12 bytes = 2 x 6, but the second element is 2 bytes long followed by an unknown field: the
    strided header check must notice and fall back to the sequential parse."""
    bytes_list = b"\x0a\x04\x01\x02\x03\x04" + b"\x0a\x02\x05\x06" + b"\x10\x07"
    feature = b"\x0a" + bytes([len(bytes_list)]) + bytes_list
    entry = b"\x0a\x01f" + b"\x12" + bytes([len(feature)]) + feature
    example = b"\x0a" + bytes([len(entry) + 2]) + b"\x0a" + bytes([len(entry)]) + entry
    assert decode_example(example)["f"] == [b"\x01\x02\x03\x04", b"\x05\x06"]
    with pytest.raises(RecordError, match="different sizes"):
        decode_example(example, raw_dtypes={"f": np.uint8})


def test_sequence_example_round_trips_with_raw_feature_lists():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (7, 32), dtype=np.uint8)
    context = {"id": "yt1", "labels": [3, 3861], "segment_scores": FloatList([]), "title": "ñ"}
    lists = {
        "rgb": [row.tobytes() for row in rgb],
        "ragged": [Int64List([]), [1], [1, 2]],
        "floats": [0.5, FloatList([])],
        "empty": [],
    }
    data = encode_sequence_example(context, lists)
    ctx, fl = decode_sequence_example(data)
    _assert_same(
        ctx,
        {
            "id": [b"yt1"],
            "labels": np.array([3, 3861], np.int64),
            "segment_scores": np.empty(0, np.float32),
            "title": ["ñ".encode()],
        },
    )
    assert fl["rgb"] == [[row.tobytes()] for row in rgb] and fl["empty"] == []
    assert [v.tolist() for v in fl["ragged"]] == [[], [1], [1, 2]]
    assert [v.tolist() for v in fl["floats"]] == [[0.5], []]
    ctx, fl = decode_sequence_example(data, keys=["id", "rgb"], raw_dtypes={"rgb": (np.uint8, 32)})
    assert set(ctx) == {"id"} and set(fl) == {"rgb"}
    np.testing.assert_array_equal(fl["rgb"], rgb)
    ref = example_pb2.SequenceExample.FromString(data)
    assert [f.bytes_list.value[0] for f in ref.feature_lists.feature_list["rgb"].feature] == [
        r.tobytes() for r in rgb
    ]


def _expected_value(spec):
    if spec["type"] == "bytes":
        return [bytes.fromhex(v) for v in spec["value"]]
    if spec["type"] == "float":
        return np.frombuffer(bytes.fromhex(spec["value"]), "<f4").astype(np.float32)
    if spec["type"] == "int64":
        return np.array(spec["value"], np.int64)
    return []  # a Feature with no kind set


def test_tensorflow_written_examples_read_identically():
    expected = json.loads((FIXTURES / "tf_expected.json").read_text())
    records = list(read_examples(FIXTURES / "tf_examples.tfrecords"))
    assert len(records) == len(expected["examples"]) == 3
    for got, want in zip(records, expected["examples"]):
        _assert_same(got, {k: _expected_value(v) for k, v in want.items()})
    # trailing NULs survive, and the frames cut straight into an array match the bytes
    assert records[0]["trailing_nul"] == [b"a\x00\x00", b"\x00", b"", b"x\x00y\x00"]
    frames = next(read_examples(FIXTURES / "tf_examples.tfrecords", raw_dtypes={"frame_feature": ("<f2", 8)}))
    np.testing.assert_array_equal(
        frames["frame_feature"], np.frombuffer(b"".join(records[0]["frame_feature"]), "<f2").reshape(-1, 8)
    )
    assert frames["frame_feature"][-1].tobytes().endswith(b"\x00\x00")


def test_tensorflow_written_sequence_examples_read_identically():
    expected = json.loads((FIXTURES / "tf_expected.json").read_text())
    path = FIXTURES / "tf_sequence_examples.tfrecords"
    records = list(read_examples(path, sequence=True))
    assert len(records) == len(expected["sequence_examples"]) == 3
    for (ctx, lists), want in zip(records, expected["sequence_examples"]):
        _assert_same(ctx, {k: _expected_value(v) for k, v in want["context"].items()})
        assert lists.keys() == want["feature_lists"].keys()
        for key, steps in want["feature_lists"].items():
            assert len(lists[key]) == len(steps)
            for g, w in zip(lists[key], steps):
                _assert_same({"v": g}, {"v": _expected_value(w)})
    raw = list(read_examples(path, sequence=True, raw_dtypes={"rgb": (np.uint8, 16), "audio": (np.uint8, 4)}))
    for (_, lists), (_, plain) in zip(raw, records):
        assert lists["rgb"].shape == (len(plain["rgb"]), 16) and lists["audio"].shape[1] == 4
        assert lists["rgb"].tobytes() == b"".join(step[0] for step in plain["rgb"])


def test_files_written_here_read_in_the_tfrecord_package(tmp_path):
    from tfrecord.reader import tfrecord_loader

    p = tmp_path / "ours.tfrecords"
    rows = [
        {
            "id": f"v{i}",
            "tag_id": list(range(i, i + 3)),
            "score": FloatList([i / 4]),
            "frames": [bytes([i + 1]) * 4] * 2,
        }
        for i in range(5)
    ]
    write_tfrecord(p, [encode_example(r) for r in rows])
    desc = {"id": "byte", "tag_id": "int", "score": "float", "frames": "byte"}
    got = list(tfrecord_loader(str(p), None, desc))
    assert len(got) == 5
    for g, r in zip(got, rows):
        assert g["id"] == r["id"].encode()  # a single bytes element comes back raw
        assert g["tag_id"].tolist() == r["tag_id"] and g["score"].tolist() == [r["score"].values[0]]
        assert g["frames"].tolist() == r["frames"]
    seq = tmp_path / "seq.tfrecords"
    write_tfrecord(
        seq, [encode_sequence_example({"id": "s"}, {"rgb": [b"\x01\x02", b"\x03\x04"], "n": [[1], [2, 3]]})]
    )
    ctx, lists = next(
        iter(
            tfrecord_loader(str(seq), None, {"id": "byte"}, sequence_description={"rgb": "byte", "n": "int"})
        )
    )
    assert ctx["id"] == b"s" and lists["rgb"] == [b"\x01\x02", b"\x03\x04"]
    assert [v.tolist() for v in lists["n"]] == [[1], [2, 3]]


def test_files_written_by_the_tfrecord_package_read_here(tmp_path):
    from tfrecord.writer import TFRecordWriter as PackageWriter

    p = tmp_path / "theirs.tfrecords"
    writer = PackageWriter(str(p))
    for i in range(4):
        writer.write(
            {"id": (f"v{i}".encode(), "byte"), "tag_id": ([i, -i, 10**12], "int"), "w": ([0.5, i], "float")}
        )
    writer.write(
        {"id": (b"ctx", "byte")}, {"rgb": ([b"\x00\x01", b"\x02\x00"], "byte"), "n": ([[1], [2, 3]], "int")}
    )
    writer.close()
    got = list(read_examples(p, keys=["id", "tag_id", "w"]))  # the last record parses as an Example too
    for i, g in enumerate(got[:4]):
        assert g["id"] == [f"v{i}".encode()] and g["tag_id"].tolist() == [i, -i, 10**12]
        assert g["w"].tolist() == [0.5, float(i)]
    ctx, lists = list(read_examples(p, sequence=True))[-1]
    assert ctx == {"id": [b"ctx"]} and lists["rgb"] == [[b"\x00\x01"], [b"\x02\x00"]]
    assert [v.tolist() for v in lists["n"]] == [[1], [2, 3]]


def test_encoder_rejects_what_it_cannot_represent():
    with pytest.raises(TypeError, match="'x'"):
        encode_example({"x": [b"a", 1]})
    with pytest.raises(OverflowError, match="'big'"):
        encode_example({"big": 2**63})
    with pytest.raises(TypeError):
        encode_example({"obj": object()})
