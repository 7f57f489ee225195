"""QQ Browser readers under hostile input (issue 16.7): VideoStore wrong-type errors name file and
offset; `label.tsv` (one reader for data and metrics) names file and line and refuses `nan`."""

import os

import numpy as np
import pytest

from vmmlib.data.qqbrowser import reader as qq
from vmmlib.io import RecordError, encode_example, tfrecord_index, write_tfrecord
from vmmlib.io.safe import InputError
from vmmlib.metrics import read_label_tsv

FRAME = np.zeros(1536, "<f2").tobytes()


def _record(vid, **extra):
    return encode_example({"id": vid, "frame_feature": [FRAME], "title": "标题", **extra})


@pytest.mark.parametrize(
    "records, bad, match",
    [
        ([_record("a"), _record("b", title=[5])], 1, "column 'title' is int64"),  # the cache build sees it
        ([_record("a", title=[5]), _record("b", title=[6])], 0, "'title' is a int64 feature, expected bytes"),
        ([_record("a"), _record("b", tag_id=["x"])], 1, "video b: 'tag_id' is a bytes feature"),
        ([_record("a", category_id=["x"])], 0, "'category_id' is a bytes feature, expected int64"),
        (
            [_record("a"), encode_example({"id": "b", "frame_feature": [b"\0" * 10]})],
            1,
            "element of 10 bytes",
        ),
        ([encode_example({"id": [7], "frame_feature": [FRAME]})], 0, "'id' is a int64 feature"),
    ],
)
def test_video_store_wrong_type_errors_name_file_and_offset(tmp_path, records, bad, match):
    path = tmp_path / "x.tfrecords"
    write_tfrecord(path, records)
    with pytest.raises(RecordError, match=match) as err:
        store = qq.VideoStore([path], tmp_path / "cache")
        [store[i] for i in range(len(store))]
    assert err.value.path == os.fspath(path) and err.value.offset == tfrecord_index(path)[bad]


@pytest.mark.parametrize(
    "line, match",
    [
        (b"a b nan", r"line 2: relevance 'nan' is not a finite number"),
        (b"a b inf", r"line 2: relevance 'inf' is not a finite number"),
        (b"a b high", r"line 2: relevance 'high' is not a number"),
        (b"a b", r"line 2: expected 'query candidate relevance'"),
        (b"a b \xff", r"line 2: not valid UTF-8"),
    ],
)
def test_label_tsv_is_one_reader_naming_file_and_line(tmp_path, line, match):
    path = tmp_path / "label.tsv"
    path.write_bytes(b"q c 0.5\n" + line + b"\n")
    for reader in (qq.read_pairs, read_label_tsv):
        with pytest.raises(InputError, match=match) as err:
            reader(path)
        assert err.value.path == os.fspath(path)
    assert (
        qq.read_pairs.__module__ == "vmmlib.data.qqbrowser.reader"
        and read_label_tsv.__module__ == "vmmlib.io.label_tsv"
    )


def test_tag_list_entries_that_are_not_unique_integers_are_refused(tmp_path):
    path = tmp_path / "tag_list.txt"
    path.write_text("3\n5\nx7\n")
    with pytest.raises(InputError, match="line 3: tag id 'x7' is not an integer"):
        qq.TagVocab.read(path)
    path.write_text("3\n5\n3\n")
    with pytest.raises(InputError, match=r"line 3: tag id 3 repeated \(first on line 1\)"):
        qq.TagVocab.read(path)
    path.write_text("3\n5\n")
    assert qq.TagVocab.read(path).tag_ids.tolist() == [3, 5]
