"""TFRecord framing: round trips, offsets, checksums, corruption reported with file and offset."""

import os
import struct
from pathlib import Path

import crc32c
import numpy as np
import pytest

from vmmlib.io import (
    RecordError,
    TFRecordWriter,
    iter_tfrecord,
    iter_tfrecord_with_offsets,
    masked_crc32c,
    read_examples,
    read_record_at,
    tfrecord_index,
    write_tfrecord,
)

RECORDS = [b"", b"a", b"hello world", bytes(range(256)) * 40, b"\x00" * 7]
FIXTURES = Path(__file__).parent / "fixtures"


def _expected_offsets(records):
    offsets, pos = [], 0
    for r in records:
        offsets.append(pos)
        pos += 16 + len(r)
    return offsets


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "x.tfrecords"
    write_tfrecord(p, RECORDS)
    return p


def test_masked_crc_matches_the_formula_and_the_checksums_tensorflow_wrote():
    crc = crc32c.crc32c(b"foo")
    assert masked_crc32c(b"foo") == ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF
    raw = (FIXTURES / "tf_examples.tfrecords").read_bytes()
    pos = checked = 0
    while pos < len(raw):
        (length,) = struct.unpack_from("<Q", raw, pos)
        (length_crc,) = struct.unpack_from("<I", raw, pos + 8)
        (data_crc,) = struct.unpack_from("<I", raw, pos + 12 + length)
        assert masked_crc32c(raw[pos : pos + 8]) == length_crc
        assert masked_crc32c(raw[pos + 12 : pos + 12 + length]) == data_crc
        pos += 16 + length
        checked += 1
    assert checked == 3


def test_records_round_trip_with_their_offsets(path):
    assert list(iter_tfrecord(path)) == RECORDS
    got = list(iter_tfrecord_with_offsets(path))
    assert [o for o, _ in got] == _expected_offsets(RECORDS)
    assert os.path.getsize(path) == sum(16 + len(r) for r in RECORDS)


def test_index_and_random_access_agree(path):
    index = tfrecord_index(path)
    assert index.dtype == np.int64 and index.tolist() == _expected_offsets(RECORDS)
    for offset, data in zip(index[::-1], RECORDS[::-1]):
        assert read_record_at(path, offset) == data


def test_shard_keeps_every_nth_record_and_start_offset_resumes(path):
    assert list(iter_tfrecord(path, shard=(1, 2))) == RECORDS[1::2]
    assert list(iter_tfrecord(path, shard=(0, 3))) == RECORDS[0::3]
    start = int(tfrecord_index(path)[2])
    assert [d for _, d in iter_tfrecord_with_offsets(path, start_offset=start)] == RECORDS[2:]
    with pytest.raises(ValueError):
        list(iter_tfrecord(path, shard=(2, 2)))


def test_records_larger_than_the_mapped_window_are_read_whole(tmp_path, monkeypatch):
    import vmmlib.io.tfrecord as tfr

    monkeypatch.setattr(tfr, "_WINDOW", 1 << 16)  # 64 KiB windows, records up to 200 KB
    rng = np.random.default_rng(0)
    records = [rng.bytes(int(n)) for n in rng.integers(0, 200_000, 30)]
    p = tmp_path / "big.tfrecords"
    write_tfrecord(p, records)
    assert list(iter_tfrecord(p)) == records
    assert list(iter_tfrecord(p, shard=(2, 3))) == records[2::3]


def test_empty_file_has_no_records(tmp_path):
    p = tmp_path / "empty.tfrecords"
    assert write_tfrecord(p, []) == 0
    assert list(iter_tfrecord(p)) == [] and len(tfrecord_index(p)) == 0


def test_flipped_data_byte_raises_data_crc_error_naming_file_and_offset(tmp_path, path):
    raw = bytearray(path.read_bytes())
    offset = _expected_offsets(RECORDS)[3]
    raw[offset + 12 + 100] ^= 0x01
    bad = tmp_path / "bad.tfrecords"
    bad.write_bytes(raw)
    with pytest.raises(RecordError) as e:
        list(iter_tfrecord(bad))
    assert e.value.offset == offset and e.value.path == str(bad)
    assert "data CRC mismatch" in str(e.value) and f"{bad}: record at byte offset {offset}" in str(e.value)
    with pytest.raises(RecordError, match="data CRC mismatch"):
        read_record_at(bad, offset)
    # the records before it were fine, and skipping verification reads the corrupted bytes
    assert list(iter_tfrecord(bad, verify_crc=False))[3] == bytes(
        raw[offset + 12 : offset + 12 + len(RECORDS[3])]
    )


def test_bad_length_crc_is_reported(tmp_path, path):
    raw = bytearray(path.read_bytes())
    offset = _expected_offsets(RECORDS)[2]
    raw[offset + 8] ^= 0xFF  # the stored length checksum
    bad = tmp_path / "bad.tfrecords"
    bad.write_bytes(raw)
    for read in (lambda: list(iter_tfrecord(bad)), lambda: tfrecord_index(bad)):
        with pytest.raises(RecordError, match="length CRC mismatch") as e:
            read()
        assert e.value.offset == offset


@pytest.mark.parametrize(
    "cut, what",
    [(5, "truncated header"), (12 + 10, "truncated data"), (12 + len(RECORDS[3]) + 2, "truncated footer")],
)
def test_truncated_file_names_the_offset_of_the_cut_record(tmp_path, path, cut, what):
    offset = _expected_offsets(RECORDS)[3]
    bad = tmp_path / "cut.tfrecords"
    bad.write_bytes(path.read_bytes()[: offset + cut])
    with pytest.raises(RecordError, match=what) as e:
        list(iter_tfrecord(bad))
    assert e.value.offset == offset and str(bad) in str(e.value)
    with pytest.raises(RecordError) as e:
        tfrecord_index(bad)
    assert e.value.offset == offset
    # everything before the cut was yielded first
    got = []
    with pytest.raises(RecordError):
        for r in iter_tfrecord(bad):
            got.append(r)
    assert got == RECORDS[:3]


def test_read_examples_reports_crc_errors_with_offset(tmp_path):
    from vmmlib.io import encode_example

    p = tmp_path / "ex.tfrecords"
    write_tfrecord(p, [encode_example({"id": f"v{i}"}) for i in range(3)])
    raw = bytearray(p.read_bytes())
    offset = int(tfrecord_index(p)[1])
    raw[offset + 14] ^= 0x40
    p.write_bytes(raw)
    with pytest.raises(RecordError, match="data CRC") as e:
        list(read_examples(p))
    assert e.value.offset == offset


def test_writer_is_atomic(tmp_path):
    p = tmp_path / "out.tfrecords"
    with TFRecordWriter(p) as w:
        w.write(b"abc")
        assert not p.exists()  # only the temporary file exists until close
    assert list(iter_tfrecord(p)) == [b"abc"] and w.num_records == 1
    with pytest.raises(RuntimeError):
        with TFRecordWriter(p) as w:
            w.write(b"partial")
            raise RuntimeError("boom")
    assert list(iter_tfrecord(p)) == [b"abc"]  # the old file is untouched
    assert sorted(os.listdir(tmp_path)) == ["out.tfrecords"]  # no temporary left behind


def test_record_error_keeps_path_and_offset_when_pickled():
    import pickle

    e = pickle.loads(pickle.dumps(RecordError("data CRC mismatch", "a.tfrecords", 42)))
    assert (e.path, e.offset, str(e)) == (
        "a.tfrecords",
        42,
        "a.tfrecords: record at byte offset 42: data CRC mismatch",
    )
