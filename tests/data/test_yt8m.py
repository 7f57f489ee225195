import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch

from vmmlib.data.yt8m import datasets as D
from vmmlib.data.yt8m import reader as Y
from vmmlib.data.yt8m.sample import write_yt8m_sample
from vmmlib.io import (
    FloatList,
    Int64List,
    RecordError,
    encode_example,
    encode_sequence_example,
    read_examples,
    tfrecord_index,
    write_tfrecord,
)
from vmmlib.io.safe import InputError
from vmmlib.metrics.yt8m import read_segment_truth, segment_map

SMALL = dict(videos=24, validate_videos=24, test_videos=6, train_shards=2, validate_shards=4, test_shards=1)


@pytest.fixture(scope="module")
def yt_sample(tmp_path_factory):
    """A small YouTube-8M sample in the real layout (read only)."""
    return write_yt8m_sample(tmp_path_factory.mktemp("yt8m") / "data", seed=1, **SMALL)


def _digest(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _write_video(path, vid, quantized, **context):
    """One frame-level SequenceExample of (L, 1152) uint8 frames."""
    rgb, audio = quantized[:, :1024], quantized[:, 1024:]
    record = encode_sequence_example(
        {"id": vid, **context}, {"rgb": [r.tobytes() for r in rgb], "audio": [a.tobytes() for a in audio]}
    )
    write_tfrecord(path, [record])
    return path


def _ramp(num_frames):
    """(L, 1152) uint8 whose frame t holds the value t + 1 everywhere (frame t is recognisable)."""
    return np.repeat(np.arange(1, num_frames + 1, dtype=np.uint8)[:, None], 1152, axis=1)


def _frame_ids(frames):
    """Which ramp frame each row holds (0 for a zero/padding row), from its dequantised value."""
    q = Y.quantize(frames[..., 0])
    return np.where(np.abs(frames[..., 0]) > 0, q.astype(int), 0)


# ------------------------------------------------------------------------------ features


def test_dequantize_is_googles_formula_and_quantize_inverts_it():
    q = np.arange(256, dtype=np.uint8)
    x = Y.dequantize(q)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, q.astype(np.float64) * 4 / 255 + 4 / 512 - 2, rtol=0, atol=1e-6)
    assert Y.dequantize(np.uint8(0)) == pytest.approx(-2 + 4 / 512)
    np.testing.assert_array_equal(Y.quantize(x), q)  # exact round trip on every code
    values = np.linspace(-2, 2, 1001, dtype=np.float32)
    assert np.abs(Y.dequantize(Y.quantize(values)) - values).max() <= 4 / 255
    assert Y.quantize(np.array([-9.0, 9.0])).tolist() == [0, 255]  # clipped to [-2, 2]


def test_l2_normalize_gives_unit_frames_and_keeps_padding_zero():
    frames = np.vstack([np.full((2, 1152), 0.5, np.float32), np.zeros((1, 1152), np.float32)])
    out = Y.l2_normalize(frames)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), [1, 1, 0], atol=1e-6)


# ------------------------------------------------------------------------------ sample layout and records


def test_sample_writes_the_real_layout(yt_sample):
    files = Y.check_layout(yt_sample)
    assert [p.name for p in files["frame/train"]] == ["train0000.tfrecord", "train0001.tfrecord"]
    assert [p.name for p in files["frame/validate"]] == [f"validate{i:04d}.tfrecord" for i in range(4)]
    assert [p.name for p in files["frame/test"]] == ["test0000.tfrecord"]
    assert [p.name for p in files["video/train"]] == ["train0000.tfrecord", "train0001.tfrecord"]
    vocab = (yt_sample / "vocabulary.csv").read_text().splitlines()
    assert vocab[0].startswith("Index,TrainVideoCount,KnowledgeGraphId,Name") and len(vocab) == 1 + 3862


def test_frame_level_records_have_the_spec_keys_dtypes_and_shapes(yt_sample):
    context, lists = next(read_examples(Y.split_files(yt_sample, "frame/validate")[0], sequence=True))
    assert set(context) == {
        "id",
        "labels",
        "segment_start_times",
        "segment_end_times",
        "segment_labels",
        "segment_scores",
    }
    assert set(lists) == {"rgb", "audio"}
    assert all(
        len(step) == 1 and len(step[0]) == 1024 for step in lists["rgb"]
    )  # one bytes element per second
    assert all(len(step[0]) == 128 for step in lists["audio"]) and len(lists["rgb"]) == len(lists["audio"])
    assert context["labels"].dtype == np.int64 and context["segment_start_times"].dtype == np.int64
    assert context["segment_scores"].dtype == np.float32 and context["segment_labels"].dtype == np.int64
    train_ctx, _ = next(read_examples(Y.split_files(yt_sample, "frame/train")[0], sequence=True))
    test_ctx, test_lists = next(read_examples(Y.split_files(yt_sample, "frame/test")[0], sequence=True))
    assert (
        set(train_ctx) == {"id", "labels"} and set(test_ctx) == {"id"} and set(test_lists) == {"rgb", "audio"}
    )


def test_parsed_videos_are_dequantised_and_segments_follow_the_v3_conventions(yt_sample):
    whitelist = Y.SegmentClasses.read(yt_sample / "segment_label_ids.csv")
    videos = list(Y.read_frame_level(Y.split_files(yt_sample, "frame/validate")))
    assert len(videos) == 24
    for v in videos:
        assert v["frames"].dtype == np.float32 and v["frames"].shape == (v["num_frames"], 1152)
        assert 20 <= v["num_frames"] <= 60 and np.abs(v["frames"]).max() <= 2 + 4 / 512 + 1e-6
        assert len(v["labels"]) and v["labels"].max() < 3862
        starts = v["segment_start_times"]
        assert (
            len(starts) >= min(5, v["num_frames"] // 5)
            and (starts % 5 == 0).all()
            and (starts + 5 <= v["num_frames"]).all()
        )
        assert set(v["segment_scores"].tolist()) <= {0.0, 1.0} and (v["segment_scores"] == 1).any()
        assert all(c in whitelist for c in v["segment_labels"]) and set(v["segment_labels"]) <= set(
            v["labels"]
        )


def test_video_level_records_hold_the_means_of_the_frame_level_videos(yt_sample):
    frame = {v["id"]: v for v in Y.read_frame_level(Y.split_files(yt_sample, "frame/train"))}
    video = list(Y.read_video_level(Y.split_files(yt_sample, "video/train")))
    assert [v["id"] for v in video] == list(frame)
    for v in video[:5]:
        assert (
            v["mean_rgb"].shape == (1024,)
            and v["mean_audio"].shape == (128,)
            and v["mean_rgb"].dtype == np.float32
        )
        np.testing.assert_allclose(v["mean_rgb"], frame[v["id"]]["frames"][:, :1024].mean(0), atol=1e-5)
        np.testing.assert_array_equal(v["labels"], frame[v["id"]]["labels"])
    item = D.VideoLevelDataset(Y.split_files(yt_sample, "video/train"))[0]
    assert item["frames"].shape == (1, 1152) and item["frame_mask"].tolist() == [1.0]
    assert item["labels"].shape == (3862,) and item["labels"].sum() == len(video[0]["labels"])


def test_readers_cap_videos_at_300_frames(tmp_path):
    path = _write_video(tmp_path / "long.tfrecord", "long", np.full((305, 1152), 7, np.uint8), labels=[3])
    (video,) = Y.read_frame_level([path])
    assert video["num_frames"] == 300 and video["frames"].shape == (300, 1152)
    item = D.VideoDataset(D.FrameStore([path]))[0]
    assert item["frames"].shape == (300, 1152) and item["frame_mask"].sum() == 300
    bags = D.InferenceSegmentDataset(D.FrameStore([path]))
    assert len(bags) == 60 and bags[59]["id"] == "long:295"


def test_reader_rejects_frames_of_the_wrong_size_naming_the_video(tmp_path):
    record = encode_sequence_example({"id": "bad1"}, {"rgb": [b"\x00" * 1024], "audio": [b"\x00" * 64]})
    write_tfrecord(tmp_path / "bad.tfrecord", [record])
    with pytest.raises(ValueError, match="video bad1: 'audio' element of 64 bytes"):
        Y.parse_frame_record({"id": [b"bad1"]}, {"rgb": [[b"\x00" * 1024]], "audio": [[b"\x00" * 64]]})
    with pytest.raises(RecordError, match="bad.tfrecord.*64 bytes, expected 128"):
        list(Y.read_frame_level([tmp_path / "bad.tfrecord"]))


def _frame_record(vid, num_rgb, num_audio, **context):
    """A frame-level SequenceExample with `num_rgb` rgb and `num_audio` audio frames (id None: no id)."""
    return encode_sequence_example(
        {**({"id": vid} if vid is not None else {}), **context},
        {"rgb": [bytes(1024)] * num_rgb, "audio": [bytes(128)] * num_audio},
    )


def _assert_located(err, path, index):
    assert err.value.path == str(path) and err.value.offset == tfrecord_index(path)[index]
    assert str(path) in str(err.value) and f"byte offset {tfrecord_index(path)[index]}" in str(err.value)


@pytest.mark.parametrize(
    "record, message",
    [
        (_frame_record("v1", 4, 3), "video v1: 4 rgb frames but 3 audio frames"),
        (
            _frame_record(
                "v1", 2, 2, segment_start_times=[0, 5], segment_labels=[3], segment_scores=[1.0, 0.0]
            ),
            "video v1: segment_start_times/labels/scores differ in length \\(2, 1, 2\\)",
        ),
        (_frame_record(None, 2, 2, labels=[1]), "record has no id"),
        (_frame_record("", 2, 2), "record has no id"),
    ],
    ids=["rgb_audio_lengths", "segment_list_lengths", "no_id", "empty_id"],
)
def test_frame_level_record_errors_name_file_and_byte_offset(tmp_path, record, message):
    path = tmp_path / "validate0000.tfrecord"
    write_tfrecord(path, [_frame_record("ok", 3, 3), record])
    with pytest.raises(RecordError, match=message) as err:
        list(Y.read_frame_level([path]))
    _assert_located(err, path, 1)
    with pytest.raises(RecordError, match=message) as err:
        D.FrameStore([path])
    _assert_located(err, path, 1)
    with pytest.raises(RecordError, match=message) as err:  # the cache build finds the record too
        D.FrameStore([path], cache_dir=tmp_path / "cache")
    _assert_located(err, path, 1)


def test_video_level_record_errors_name_file_and_byte_offset(tmp_path):
    path = tmp_path / "train0000.tfrecord"
    good = {
        "id": "a",
        "labels": [1],
        "mean_rgb": np.zeros(1024, np.float32),
        "mean_audio": np.zeros(128, np.float32),
    }
    for bad, message in [
        ({**good, "mean_audio": np.zeros(100, np.float32)}, "'mean_audio' has 100 values, expected 128"),
        ({**good, "mean_rgb": np.full(1024, np.inf, np.float32)}, "'mean_rgb' holds non-finite values"),
        ({k: v for k, v in good.items() if k != "id"}, "record has no id"),
    ]:
        write_tfrecord(path, [encode_example(good), encode_example(bad)])
        with pytest.raises(RecordError, match=message) as err:
            list(Y.read_video_level([path]))
        _assert_located(err, path, 1)


def test_segment_label_out_of_range_names_file_and_byte_offset(tmp_path):
    path = tmp_path / "validate0000.tfrecord"
    bad = _frame_record("v1", 5, 5, segment_start_times=[0], segment_labels=[5000], segment_scores=[1.0])
    write_tfrecord(path, [_frame_record("ok", 3, 3), bad])
    with pytest.raises(RecordError, match="video v1: segment label out of range") as err:
        D.SegmentDataset(D.FrameStore([path]))
    _assert_located(err, path, 1)


# ------------------------------------------------------------------------------ segments


def test_cut_segments_takes_unique_start_times_pads_the_end_and_weights_rated_entries():
    frames = Y.dequantize(_ramp(12))
    out = D.cut_segments(frames, [10, 0, 10, 0], [3, 5, 7, 3], [1.0, 0.0, 0.5, 1.0], num_classes=10)
    assert out["start_times"].tolist() == [10, 0]  # first-seen order, as tf.unique
    assert out["frames"].shape == (2, 5, 1152) and out["frames"].dtype == np.float32
    assert _frame_ids(out["frames"])[0].tolist() == [11, 12, 0, 0, 0]  # frames 10, 11, then zero padding
    assert _frame_ids(out["frames"])[1].tolist() == [1, 2, 3, 4, 5]
    assert out["frame_mask"].tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    expected = np.zeros((2, 10), np.float32)
    expected[0, 3], expected[0, 7], expected[1, 5], expected[1, 3] = 1.0, 0.5, 0.0, 1.0
    np.testing.assert_array_equal(out["labels"], expected)
    weights = np.zeros((2, 10), np.float32)
    weights[0, [3, 7]] = weights[1, [5, 3]] = 1
    np.testing.assert_array_equal(out["label_weights"], weights)
    seeds = D.cut_segments(frames, [10], [3], [1.0], num_classes=10, unrated_as_negative=True)
    assert seeds["label_weights"].tolist() == [[1.0] * 10]


def test_segment_dataset_items_match_cut_segments_and_project_onto_the_whitelist(tmp_path):
    path = _write_video(
        tmp_path / "v.tfrecord",
        "abcd",
        _ramp(12),
        labels=[3, 5, 9],
        segment_start_times=Int64List([10, 0, 10]),
        segment_labels=Int64List([3, 5, 9]),
        segment_scores=FloatList([1.0, 0.0, 1.0]),
    )
    classes = Y.SegmentClasses([9, 3, 5, 100])  # class 7 not rated anywhere
    ds = D.SegmentDataset(D.FrameStore([path]), classes=classes)
    ref = D.cut_segments(Y.dequantize(_ramp(12)), [10, 0, 10], [3, 5, 9], [1.0, 0.0, 1.0])
    assert [ds[j]["id"] for j in range(len(ds))] == ["abcd:10", "abcd:0"]
    for j in range(2):
        np.testing.assert_array_equal(ds[j]["frames"], ref["frames"][j])
        np.testing.assert_array_equal(ds[j]["frame_mask"], ref["frame_mask"][j])
        np.testing.assert_array_equal(ds[j]["labels"], classes.to_subset(ref["labels"][j]))
    assert ds[0]["labels"].tolist() == [1, 1, 0, 0] and ds[0]["label_weights"].tolist() == [1, 1, 0, 0]
    assert ds[1]["labels"].tolist() == [0, 0, 0, 0] and ds[1]["label_weights"].tolist() == [0, 0, 1, 0]
    seeds = D.SegmentDataset(D.FrameStore([path]), unrated_as_negative=True)
    assert seeds[1]["label_weights"].shape == (3862,) and seeds[1]["label_weights"].all()


def test_tta_roll_wraps_around_the_300_frame_buffer_and_keeps_segment_ids(tmp_path):
    frames = Y.dequantize(_ramp(12))
    plain = D.inference_segments(frames)
    assert plain["start_times"].tolist() == [0, 5, 10]
    assert _frame_ids(plain["frames"]).tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12, 0, 0, 0]]
    assert plain["frame_mask"][2].tolist() == [1, 1, 0, 0, 0]
    # shift +1: bag k holds original frames 5k-1 .. 5k+3; bag 0 starts with buffer row 299 (padding)
    right = D.inference_segments(frames, shift=1)
    assert _frame_ids(right["frames"]).tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 0, 0]]
    # shift -2: original frames 5k+2 .. 5k+6; frames 0 and 1 wrap to buffer rows 298, 299 (no bag reads them)
    left = D.inference_segments(frames, shift=-2)
    assert _frame_ids(left["frames"]).tolist() == [[3, 4, 5, 6, 7], [8, 9, 10, 11, 12], [0, 0, 0, 0, 0]]
    # the seed's per-bag num_frames does not move with the roll
    for out in (right, left):
        assert out["start_times"].tolist() == [0, 5, 10]
        np.testing.assert_array_equal(out["frame_mask"], plain["frame_mask"])
    # a full 300-frame video: frames really wrap (bag 0 under shift +1 starts with the last frame)
    full = Y.dequantize(np.repeat((np.arange(300) % 250 + 1).astype(np.uint8)[:, None], 1152, axis=1))
    wrapped = D.inference_segments(full, shift=1)
    assert _frame_ids(wrapped["frames"][0]).tolist() == [300 % 250, 1, 2, 3, 4]
    np.testing.assert_array_equal(wrapped["frames"].reshape(300, 1152), np.roll(full, 1, axis=0))
    # the dataset gives the same bags with ids vid:5k for every shift
    store = D.FrameStore([_write_video(tmp_path / "v.tfrecord", "v12", _ramp(12))])
    for shift, ref in ((0, plain), (1, right), (-2, left)):
        ds = D.InferenceSegmentDataset(store, shift=shift)
        assert [ds[j]["id"] for j in range(len(ds))] == ["v12:0", "v12:5", "v12:10"]
        np.testing.assert_array_equal(np.stack([ds[j]["frames"] for j in range(3)]), ref["frames"])
        np.testing.assert_array_equal(np.stack([ds[j]["frame_mask"] for j in range(3)]), ref["frame_mask"])


def test_video_windows_follow_sample_random_sequence_and_are_deterministic(tmp_path):
    rows, mask = D.window_rows(3, 5, 0.9)  # a short video repeats its last frame, masked out
    assert rows.tolist() == [0, 1, 2, 2, 2] and mask.tolist() == [1, 1, 1, 0, 0]
    assert D.window_rows(12, 5, 0.999)[0].tolist() == [7, 8, 9, 10, 11]
    assert D.window_rows(12, 5, None)[0].tolist() == [3, 4, 5, 6, 7]
    assert D.window_rows(0, 5, 0.5)[1].sum() == 0
    path = _write_video(tmp_path / "v.tfrecord", "v40", _ramp(40), labels=[1, 3861])
    store = D.FrameStore([path])
    ds = D.VideoDataset(store, window=5, seed=3)
    item = ds[0]
    assert item["frames"].shape == (5, 1152) and item["labels"].sum() == 2 and item["labels"][3861] == 1
    ids = _frame_ids(item["frames"])
    assert np.diff(ids).tolist() == [1, 1, 1, 1]  # contiguous
    np.testing.assert_array_equal(D.VideoDataset(store, window=5, seed=3)[0]["frames"], item["frames"])
    starts = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        starts.add(int(_frame_ids(ds[0]["frames"])[0]))
    assert len(starts) > 3


def test_frame_cache_store_matches_the_in_memory_store(yt_sample, tmp_path):
    paths = Y.split_files(yt_sample, "frame/validate")[:2]
    memory, cached = D.FrameStore(paths), D.FrameStore(paths, cache_dir=tmp_path / "cache")
    assert cached.ids == memory.ids and cached.cache is not None
    for make in (
        lambda s: D.SegmentDataset(s, normalize=True),
        lambda s: D.InferenceSegmentDataset(s, shift=-1),
    ):
        a, b = make(memory), make(cached)
        assert len(a) == len(b)
        for j in (0, len(a) - 1):
            for key in a[j]:
                np.testing.assert_array_equal(a[j][key], b[j][key])


def test_segment_batches_collate_to_the_shared_keys(yt_sample):
    store = D.FrameStore(Y.split_files(yt_sample, "frame/validate"))
    classes = Y.SegmentClasses.read(yt_sample / "segment_label_ids.csv")
    ds = D.SegmentDataset(store, classes=classes, normalize=True)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=8)))
    assert batch["frames"].shape == (8, 5, 1152) and batch["frames"].dtype == torch.float32
    assert batch["labels"].shape == (8, 1000) and batch["label_weights"].shape == (8, 1000)
    assert batch["frame_mask"].shape == (8, 5) and len(batch["id"]) == 8 and ":" in batch["id"][0]
    norms = batch["frames"].norm(dim=-1)[batch["frame_mask"] > 0]
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_video_stream_yields_the_video_dataset_items(yt_sample):
    paths = Y.split_files(yt_sample, "frame/train")
    stream = D.VideoStream(paths, window=5, random_window=False)
    mapped = D.VideoDataset(D.FrameStore(paths), window=5, random_window=False)
    items = list(stream)
    assert len(items) == len(mapped) == 24
    for j in (0, 23):
        np.testing.assert_array_equal(items[j]["frames"], mapped[j]["frames"])
        assert items[j]["id"] == mapped[j]["id"]
    random = D.VideoStream(paths, window=5, seed=5)
    first = [it["frames"] for it in random]
    np.testing.assert_array_equal(first[3], list(random)[3]["frames"])
    random.set_epoch(1)
    assert any(not np.array_equal(a["frames"], b) for a, b in zip(random, first))


# ------------------------------------------------------------------------------ classes and shards


def test_segment_label_ids_csv_is_read_and_maps_between_class_spaces(yt_sample, tmp_path):
    ids = Y.read_segment_label_ids(yt_sample / "segment_label_ids.csv")
    assert (yt_sample / "segment_label_ids.csv").read_text().startswith("Index\n")
    assert ids.dtype == np.int64 and len(ids) == 1000 and len(set(ids.tolist())) == 1000 and ids.max() < 3862
    (tmp_path / "ids.csv").write_text("Index\n17\n4\n3861\n")
    classes = Y.SegmentClasses.read(tmp_path / "ids.csv")
    assert (
        classes.class_ids.tolist() == [17, 4, 3861]
        and classes.column(4) == 1
        and 17 in classes
        and 5 not in classes
    )
    assert classes.mask.shape == (3862,) and classes.mask.sum() == 3 and classes.mask[3861] == 1
    scores = np.arange(3862, dtype=np.float32)[None].repeat(2, 0)
    assert classes.to_subset(scores).tolist() == [[17, 4, 3861]] * 2
    full = classes.to_full(classes.to_subset(scores))
    np.testing.assert_array_equal(full, scores * classes.mask)
    with pytest.raises(ValueError, match="duplicate"):
        Y.SegmentClasses([1, 1])


def test_holdout_shards_are_the_first_in_seed_order_deterministic_and_disjoint(tmp_path):
    names = [f"validate{i:04d}.tfrecord" for i in range(12)]
    shuffled = [tmp_path / names[i] for i in np.random.default_rng(0).permutation(12)]
    holdout, finetune = Y.holdout_shards(shuffled, n_holdout=3)
    assert [p.name for p in holdout] == names[:3] and [p.name for p in finetune] == names[3:]
    assert Y.holdout_shards(list(reversed(shuffled)), n_holdout=3) == (holdout, finetune)
    assert not set(holdout) & set(finetune)
    gcs = [tmp_path / f"validate{a}{b}.tfrecord" for a in "01aZ" for b in "01"]
    order = [p.stem[-2:] for p in Y.seed_shard_order(gcs)]
    assert order == ["00", "10", "a0", "Z0", "01", "11", "a1", "Z1"]  # second character is the outer loop
    with pytest.raises(ValueError, match="n_holdout"):
        Y.holdout_shards(shuffled, n_holdout=12)


def test_shard_folds_hold_out_whole_shards_once_each(yt_sample):
    paths = Y.split_files(yt_sample, "frame/validate")
    seen = []
    for fold in range(2):
        train, val = Y.shard_folds(list(reversed(paths)), 2, fold)
        assert not set(train) & set(val) and sorted(train + val) == paths
        assert Y.shard_folds(paths, 2, fold) == (train, val)
        seen += val
        ids_val = {v["id"] for v in Y.read_frame_level(val)}
        ids_train = {v["id"] for v in Y.read_frame_level(train)}
        assert ids_val and not ids_val & ids_train
    assert sorted(seen) == paths
    with pytest.raises(ValueError, match="at least 5 shards"):
        Y.shard_folds(paths, 5, 0)


def test_check_layout_names_what_is_missing(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        Y.check_layout(tmp_path / "nope")
    (tmp_path / "frame" / "train").mkdir(parents=True)
    with pytest.raises(InputError, match="segment_label_ids.csv.*frame/validate"):
        Y.check_layout(tmp_path)


# ------------------------------------------------------------------------------ generator


def test_same_seed_gives_byte_identical_files_across_processes(tmp_path):
    code = (
        "import sys; from vmmlib.data.yt8m.sample import write_yt8m_sample as w; "
        "w(sys.argv[1], videos=6, validate_videos=6, test_videos=2, train_shards=2, validate_shards=2, test_shards=1, seed=7)"
    )
    for name in ("a", "b"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], check=True)
    digest = _digest(tmp_path / "a")
    assert digest == _digest(tmp_path / "b") and len(digest) == 9
    sizes = dict(videos=6, validate_videos=6, test_videos=2, train_shards=2, validate_shards=2, test_shards=1)
    write_yt8m_sample(tmp_path / "c", seed=8, **sizes)
    other = _digest(tmp_path / "c")
    assert all(other[k] != digest[k] for k in digest if k.endswith(".tfrecord"))
    with pytest.raises(FileExistsError):
        write_yt8m_sample(tmp_path / "c", seed=8, **sizes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # no temporary left behind


def test_planted_structure_segments_of_a_class_are_closer_than_of_different_classes(yt_sample):
    """Positive segments of the same class have closer 5-frame means than of different classes."""
    ds = D.SegmentDataset(D.FrameStore(Y.split_files(yt_sample, "frame/validate")))
    means, classes = [], []
    for j in range(len(ds)):
        item = ds[j]
        positive = np.flatnonzero(item["labels"] > 0)
        if len(positive):
            means.append(item["frames"].mean(0))
            classes.append(positive[0])
    means = np.stack(means)
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    sim, classes = means @ means.T, np.array(classes)
    same = classes[:, None] == classes[None, :]
    np.fill_diagonal(same, False)
    different = classes[:, None] != classes[None, :]
    assert same.sum() > 10 and len(set(classes.tolist())) > 5
    assert sim[same].mean() > sim[different].mean() + 0.15
    # a rated class's negative segments (score 0) look unlike its positive ones
    rated = {}
    for j in range(len(ds)):
        item = ds[j]
        mean = item["frames"].mean(0)
        for c in np.flatnonzero(item["label_weights"]):
            rated.setdefault(c, []).append((mean / np.linalg.norm(mean), item["labels"][c]))
    pos_pos, pos_neg = [], []
    for entries in rated.values():
        pos = [m for m, s in entries if s > 0]
        neg = [m for m, s in entries if s == 0]
        pos_pos += [a @ b for i, a in enumerate(pos) for b in pos[i + 1 :]]
        pos_neg += [a @ b for a in pos for b in neg]
    assert len(pos_neg) > 10 and np.mean(pos_pos) > np.mean(pos_neg) + 0.15


def test_class_centroids_of_5_frame_segments_beat_random_scores_on_the_segment_metric(tmp_path):
    """Hold-out shards scored by the nearest fine-tune class centroid: far above random segment mAP."""
    root = write_yt8m_sample(
        tmp_path / "d",
        seed=1,
        videos=2,
        validate_videos=120,
        test_videos=2,
        train_shards=1,
        validate_shards=6,
    )
    holdout, finetune = Y.holdout_shards(Y.split_files(root, "frame/validate"), n_holdout=2)
    train = D.SegmentDataset(D.FrameStore(finetune), normalize=True)
    members = {}
    for j in range(len(train)):
        item = train[j]
        for c in np.flatnonzero(item["labels"] > 0):
            members.setdefault(int(c), []).append(item["frames"].mean(0))
    classes = sorted(members)
    centroids = np.stack([np.mean(members[c], 0) for c in classes])  # (K, 1152)
    store = D.FrameStore(holdout)
    bags = D.InferenceSegmentDataset(store, normalize=True)
    ids = [bags[j]["id"] for j in range(len(bags))]
    scores = np.stack([bags[j]["frames"].mean(0) for j in range(len(bags))]) @ centroids.T  # (S, K)
    truth = read_segment_truth(
        store.ids,
        [m["segment_start_times"] for m in store.meta],
        [m["segment_labels"] for m in store.meta],
        [m["segment_scores"] for m in store.meta],
    )

    def submission(s):
        return {c: [ids[i] for i in np.argsort(-s[:, k], kind="stable")] for k, c in enumerate(classes)}

    model = segment_map(submission(scores), truth)
    chance = segment_map(submission(np.random.default_rng(0).random(scores.shape)), truth)
    assert model > chance + 0.15 and model > 0.75


def test_the_record_format_module_imports_no_torch():
    """`vmm validate` / `vmm evaluate yt8m` read truth shards through it and must stay fast."""
    code = "import sys, vmmlib.data.yt8m.reader, vmmlib.data.yt8m.sample; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "text, match",
    [
        ("Index\n17\nx4\n", "line 3: class id 'x4' is not a non-negative integer"),
        ("Index\n17\n4\n17\n", r"line 4: class id 17 repeated \(first on line 2\)"),
        ("17\n-4\n", "line 2: class id '-4'"),
        ("Index\n3862\n", "line 2: class id 3862 is outside"),
    ],
)
def test_segment_class_lists_drop_nothing_silently(tmp_path, text, match):
    path = tmp_path / "segment_label_ids.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=match) as err:
        Y.SegmentClasses.read(path)
    assert err.value.path == str(path)


def test_layout_folders_may_be_the_users_links(yt_sample, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    for name in ("segment_label_ids.csv", "frame"):
        (root / name).symlink_to(yt_sample / name)  # data on another disk, linked in: fixed names, not data
    assert Y.check_layout(root)["frame/validate"] == sorted((root / "frame" / "validate").glob("*"))
