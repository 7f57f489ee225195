import hashlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from vmmlib.data.qqbrowser import reader as qq
from vmmlib.data.frames import sample_frames
from vmmlib.data.record_checks import NonFiniteFeatureError
from vmmlib.data.qqbrowser.sample import write_qqbrowser_sample
from vmmlib.data.tokenize import encode_texts, load_tokenizer
from vmmlib.io import (
    RecordError,
    cache_dir_for,
    encode_example,
    read_examples,
    tfrecord_index,
    write_tfrecord,
)
from vmmlib.io.safe import InputError


def _digest(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_sample_writes_the_real_layout(qq_sample):
    files = qq.check_layout(qq_sample)
    assert [p.name for p in files["pointwise"]] == [
        "pretrain_0.tfrecords",
        "pretrain_1.tfrecords",
        "pretrain_2.tfrecords",
    ]
    assert files["pairwise"][0].name == "pairwise.tfrecords"
    assert files["test_a"][0].name == "test_a.tfrecords" and files["test_b"][0].name == "test_b.tfrecords"
    assert (qq_sample / "tag_list.txt").is_file() and qq.default_vocab(qq_sample).is_file()
    pairs = qq.read_pairs(qq_sample / "pairwise" / "label.tsv")
    assert len(pairs) == 120 and pairs["relevance"].between(0, 1).all()
    pair_ids = {v["id"] for v in qq.read_videos(files["pairwise"])}
    assert set(pairs["query"]) | set(pairs["candidate"]) <= pair_ids


def test_sample_records_have_the_spec_schema(qq_sample):
    record = next(read_examples(qq.split_files(qq_sample, "pointwise")[0], schema=qq.SCHEMA))
    assert set(record) == set(qq.SCHEMA)
    assert all(len(chunk) == 3072 for chunk in record["frame_feature"])  # 1536 float16 per frame
    assert record["tag_id"].dtype == np.int64 and len(record["category_id"]) == 1
    assert 10000 <= record["category_id"][0] < 15000
    test_record = next(read_examples(qq.split_files(qq_sample, "test_a")[0]))
    assert "tag_id" not in test_record and "category_id" not in test_record


def test_same_seed_gives_byte_identical_files_across_processes(tmp_path):
    code = (
        "import sys; from vmmlib.data.qqbrowser.sample import write_qqbrowser_sample as w; "
        "w(sys.argv[1], videos=20, pairs=30, pair_videos=12, test_videos=4, shards=2, seed=7)"
    )
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], check=True)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    write_qqbrowser_sample(
        tmp_path / "c", videos=20, pairs=30, pair_videos=12, test_videos=4, shards=2, seed=8
    )
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_sample_has_zero_frame_videos_empty_titles_and_long_videos(tmp_path):
    root = write_qqbrowser_sample(
        tmp_path / "d", videos=300, pairs=10, pair_videos=10, test_videos=2, shards=1, seed=3
    )
    videos = list(qq.read_videos(qq.split_files(root, "pointwise")))
    lengths = np.array([len(v["frames"]) for v in videos])
    assert (lengths == 0).any() and (lengths > 32).any() and (lengths < 32).any()
    assert any(v["title"] == "" for v in videos)
    assert all(v["frames"].dtype == np.float16 and v["frames"].shape[1:] == (1536,) for v in videos)


def test_planted_structure_tags_follow_the_frames(qq_sample):
    """Videos sharing a tag have closer mean frames than random pairs (the data is learnable)."""
    videos = [v for v in qq.read_videos(qq.split_files(qq_sample, "pointwise")) if len(v["frames"])]
    means = np.stack([v["frames"].astype(np.float32).mean(0) for v in videos])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    same, other = [], []
    for i in range(len(videos)):
        for j in range(i + 1, len(videos)):
            shared = set(videos[i]["tag_id"].tolist()) & set(videos[j]["tag_id"].tolist())
            (same if shared else other).append(means[i] @ means[j])
    assert np.mean(same) > np.mean(other) + 0.1


def test_check_layout_names_what_is_missing(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        qq.check_layout(tmp_path / "nope")
    (tmp_path / "pointwise").mkdir()
    with pytest.raises(InputError, match="pairwise/label.tsv"):
        qq.check_layout(tmp_path)


def test_frame_sampling_repeat_last_matches_the_tf_baseline():
    frames = np.arange(5, dtype=np.float32)[:, None].repeat(2, 1)
    out, mask = sample_frames(frames, 8, "repeat_last")
    assert out[:, 0].tolist() == [0, 1, 2, 3, 4, 4, 4, 4] and mask.tolist() == [1] * 5 + [0] * 3
    long = np.arange(100, dtype=np.float32)[:, None]
    out, mask = sample_frames(long, 32, "repeat_last")
    step = 100 // 32
    assert out[:, 0].tolist() == [i * step + step // 2 for i in range(32)] and mask.all()


def test_frame_sampling_zero_pad_matches_the_first_place():
    frames = np.ones((3, 4), np.float16)
    out, mask = sample_frames(frames, 5, "zero_pad")
    assert out.dtype == np.float32 and out[3:].sum() == 0 and mask.tolist() == [1, 1, 1, 0, 0]
    long = np.arange(50, dtype=np.float32)[:, None]
    out, _ = sample_frames(long, 32, "zero_pad")
    assert out[:, 0].tolist() == [round((i + 0.5) * 49 / 32) for i in range(32)]


def test_frame_sampling_handles_videos_without_frames():
    for mode in ("repeat_last", "zero_pad"):
        out, mask = sample_frames(np.zeros((0, 1536), np.float16), 32, mode)
        assert out.shape == (32, 1536) and not out.any() and not mask.any()
    with pytest.raises(ValueError, match="repeat_last, zero_pad"):
        sample_frames(np.zeros((1, 2)), 4, "middle")


def test_tag_multi_hot_drops_tags_outside_the_list(tmp_path):
    (tmp_path / "tags.txt").write_text("7\n3\n99\n")
    vocab = qq.TagVocab.read(tmp_path / "tags.txt")
    assert vocab.multi_hot([3, 99, 12345]).tolist() == [0, 1, 1] and len(vocab) == 3 and 7 in vocab
    assert vocab.multi_hot([]).sum() == 0


def test_tokenizer_gives_one_token_per_chinese_character(qq_sample):
    tok = load_tokenizer(qq.default_vocab(qq_sample))
    ids, mask = encode_texts(tok, ["一丁七", ""], max_length=6)
    assert tok.convert_ids_to_tokens(ids[0][:5].tolist()) == ["[CLS]", "一", "丁", "七", "[SEP]"]
    assert ids[1].tolist()[:3] == [tok.cls_token_id, tok.sep_token_id, 0] and mask[1].sum() == 2
    long_ids, _ = encode_texts(tok, ["一" * 100], max_length=32)
    assert long_ids.shape == (1, 32) and long_ids[0, -1] == tok.sep_token_id


def test_parse_video_rejects_frames_of_the_wrong_size():
    record = {"id": [b"42"], "frame_feature": [b"\x00" * 100]}
    with pytest.raises(ValueError, match="video 42: frame_feature elements of 100 bytes"):
        qq.parse_video(record)


def test_reader_handles_missing_optional_fields(tmp_path):
    path = tmp_path / "x.tfrecords"
    write_tfrecord(
        path, [encode_example({"id": "5", "frame_feature": []}), encode_example({"id": "6", "title": "一"})]
    )
    videos = list(qq.read_videos([path]))
    assert [v["id"] for v in videos] == ["5", "6"]
    assert (
        videos[0]["frames"].shape == (0, 1536) and videos[0]["title"] == "" and videos[0]["category_id"] == -1
    )
    assert videos[1]["tag_id"].shape == (0,)


def test_corrupt_shard_error_names_file_and_offset(qq_sample, tmp_path):
    src = qq.split_files(qq_sample, "pairwise")[0]
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "pairwise.tfrecords"
    bad.write_bytes(bytes(data))
    with pytest.raises(RecordError) as err:
        list(qq.read_videos([bad]))
    assert str(bad) in str(err.value) and "offset" in str(err.value) and err.value.offset >= 0


# ------------------------------------------------------------------------------ bad records (issue 9.3, 9.6)


def _plant_inf(src, dst, index, frame, value=np.inf):
    """Copy a shard, setting one fp16 value of record `index`'s frame `frame` to `value`; return its id."""
    records = list(read_examples(src))
    chunk = np.frombuffer(records[index]["frame_feature"][frame], "<f2").copy()
    chunk[7] = value
    records[index]["frame_feature"][frame] = chunk.tobytes()
    write_tfrecord(dst, [encode_example(r) for r in records])
    return records[index]["id"][0].decode()


def _copy_sample(src, dst):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".vmm_cache"))
    return dst


def test_read_videos_reports_an_inf_frame_by_file_offset_and_video_and_can_drop_or_zero_it(
    qq_sample, tmp_path
):
    src = qq.split_files(qq_sample, "pairwise")[0]
    bad = tmp_path / "pairwise.tfrecords"
    vid = _plant_inf(src, bad, index=3, frame=1)
    with pytest.raises(NonFiniteFeatureError) as err:
        list(qq.read_videos([bad]))
    assert (
        err.value.path == str(bad)
        and err.value.offset == tfrecord_index(bad)[3]
        and err.value.video_ids == [vid]
    )
    assert (
        f"video {vid}" in str(err.value)
        and "+inf in frame(s) 1" in str(err.value)
        and "nonfinite=" in str(err.value)
    )
    clean = list(qq.read_videos([src]))
    dropped = list(qq.read_videos([bad], nonfinite="drop"))
    assert [v["id"] for v in dropped] == [v["id"] for v in clean if v["id"] != vid]
    zeroed = list(qq.read_videos([bad], nonfinite="zero"))
    expected = clean[3]["frames"].copy()
    expected[1, 7] = 0
    np.testing.assert_array_equal(zeroed[3]["frames"], expected)
    np.testing.assert_array_equal(zeroed[4]["frames"], clean[4]["frames"])
    with pytest.raises(ValueError, match="error, drop, zero"):
        list(qq.read_videos([bad], nonfinite="skip"))


def test_load_refuses_an_inf_frame_in_the_sample_by_default_and_drops_or_zeroes_it_by_option(
    qq_sample, tmp_path
):
    root = _copy_sample(qq_sample, tmp_path / "data")
    shard = qq.split_files(root, "pointwise")[1]
    original = shard.read_bytes()
    (tmp_path / "orig.tfrecords").write_bytes(original)
    vid = _plant_inf(tmp_path / "orig.tfrecords", shard, index=2, frame=0, value=-np.inf)
    with pytest.raises(NonFiniteFeatureError) as err:
        qq.load(root).split("pointwise")
    assert (
        err.value.path == str(shard)
        and err.value.offset == tfrecord_index(shard)[2]
        and err.value.video_ids == [vid]
    )
    assert "-inf" in str(err.value)
    dropped = qq.load(root, nonfinite="drop").split("pointwise")
    assert vid not in dropped.ids and len(dropped) == 59 and dropped.videos.dropped == {vid}
    with pytest.raises(KeyError, match="dropped for non-finite"):
        dropped.index_of(vid)
    zeroed = qq.load(root, nonfinite="zero").split("pointwise")
    store = zeroed.videos
    frames = store[zeroed.index_of(vid)]["frames"]
    assert np.isfinite(frames).all() and frames[0, 7] == 0 and len(zeroed) == 60
    assert all(np.isfinite(zeroed[i]["frames"]).all() for i in range(len(zeroed)))
    assert (cache_dir_for(root) / "pointwise" / "nonfinite.json").is_file()  # scanned once per cache build
    shard.write_bytes(original)  # a repaired shard rebuilds the cache, and the scan with it
    assert len(qq.load(root).split("pointwise")) == 60


def _records_with_ids(ids, **extra):
    frame = np.zeros(1536, "<f2").tobytes()
    return [
        encode_example({**({"id": v} if v is not None else {}), "frame_feature": [frame], **extra})
        for v in ids
    ]


def test_a_record_without_an_id_is_an_error_naming_file_and_offset(tmp_path):
    path = tmp_path / "x.tfrecords"
    write_tfrecord(path, _records_with_ids(["a", None, "c"]))
    with pytest.raises(RecordError, match="has no id") as err:
        list(qq.read_videos([path]))
    assert err.value.path == str(path) and err.value.offset == tfrecord_index(path)[1]
    with pytest.raises(RecordError, match="has no id") as err:
        qq.VideoStore([path], tmp_path / "cache")
    assert err.value.path == str(path) and err.value.offset == tfrecord_index(path)[1]
    write_tfrecord(path, _records_with_ids(["a", ""]))  # an empty id is no id either
    with pytest.raises(RecordError, match="has no id") as err:
        list(qq.read_videos([path]))
    assert err.value.offset == tfrecord_index(path)[1]


def test_text_that_is_not_utf8_is_an_error_naming_field_file_and_offset(tmp_path):
    path = tmp_path / "x.tfrecords"
    write_tfrecord(path, _records_with_ids(["a"]) + _records_with_ids(["b"], title=[b"\xff\xfe"]))
    with pytest.raises(RecordError, match="video b: 'title' is not UTF-8") as err:
        list(qq.read_videos([path]))
    assert err.value.path == str(path) and err.value.offset == tfrecord_index(path)[1]
    with pytest.raises(RecordError, match="'title' is not UTF-8") as err:
        qq.VideoDataset(qq.VideoStore([path], tmp_path / "cache"), None, qq.TagVocab([1]))
    assert err.value.path == str(path) and err.value.offset == tfrecord_index(path)[1]
