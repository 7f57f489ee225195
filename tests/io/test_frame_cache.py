"""FrameCache: build from TFRecords, random access, ids, reuse vs rebuild, zero-frame records."""

import os

import numpy as np
import pytest

from vmmlib.io import (
    BytesList,
    FrameCache,
    encode_example,
    encode_sequence_example,
    read_examples,
    write_tfrecord,
)

DIM = 16


def _videos(rng, n, start=0):
    out = []
    for i in range(n):
        num_frames = 0 if i % 5 == 0 else int(rng.integers(1, 9))
        out.append(
            {
                "id": str(start + i),
                "title": f"标题 {i}" if i % 3 else "",
                "tag_id": np.arange(i % 4, dtype=np.int64) * 100,
                "category_id": 10100 + i,
                "frame_feature": BytesList.from_rows(rng.standard_normal((num_frames, DIM)).astype("<f2")),
            }
        )
    return out


def _write(path, videos):
    write_tfrecord(path, [encode_example(v) for v in videos])


@pytest.fixture
def shards(tmp_path):
    rng = np.random.default_rng(0)
    paths = [tmp_path / "a.tfrecords", tmp_path / "b.tfrecords"]
    _write(paths[0], _videos(rng, 12))
    _write(paths[1], _videos(rng, 9, start=100))
    return paths


def _open(shards, cache_dir, **kw):
    return FrameCache.for_tfrecords(
        shards,
        cache_dir,
        frame_key="frame_feature",
        frame_dim=DIM,
        meta_keys=("title", "tag_id", "category_id"),
        **kw,
    )


def test_cache_holds_every_record_as_decoded(tmp_path, shards):
    cache = _open(shards, tmp_path / "cache")
    decoded = [r for p in shards for r in read_examples(p)]
    assert len(cache) == len(decoded) == 21
    for i in np.random.default_rng(1).permutation(len(cache)):
        got, want = cache[int(i)], decoded[i]
        frames = np.frombuffer(b"".join(want["frame_feature"]), "<f2").reshape(-1, DIM)
        assert got["frames"].dtype == np.float16 and got["frames"].shape == frames.shape
        np.testing.assert_array_equal(got["frames"], frames)
        assert got["id"] == want["id"] and got["title"] == want["title"]
        np.testing.assert_array_equal(got["tag_id"], want["tag_id"])
        assert got["category_id"].tolist() == want["category_id"].tolist()
    assert cache[-1]["id"] == [b"108"]
    with pytest.raises(IndexError):
        cache[21]


def test_zero_frame_records_and_missing_frame_keys_give_empty_arrays(tmp_path):
    path = tmp_path / "x.tfrecords"
    write_tfrecord(path, [encode_example({"id": "a", "frame_feature": []}), encode_example({"id": "b"})])
    cache = FrameCache.for_tfrecords(path, tmp_path / "cache", frame_key="frame_feature", frame_dim=DIM)
    assert [cache[i]["frames"].shape for i in range(2)] == [(0, DIM), (0, DIM)]
    assert cache.num_frames.tolist() == [0, 0]


def test_index_of_finds_ids_given_as_str_or_bytes(tmp_path, shards):
    cache = _open(shards, tmp_path / "cache")
    assert cache.index_of("0") == 0 and cache.index_of(b"100") == 12 and cache.index_of("108") == 20
    assert cache.ids[:3] == [b"0", b"1", b"2"]
    with pytest.raises(KeyError, match="nope"):
        cache.index_of("nope")


def test_frames_view_is_read_only_and_getitem_gives_a_private_copy(tmp_path, shards):
    cache = _open(shards, tmp_path / "cache")
    view = cache.frames(1)
    assert not view.flags.writeable
    copy = cache[1]["frames"]
    copy[:] = 0
    assert np.any(cache.frames(1) != 0)
    # the frame file is a standard .npy
    frames = np.load(tmp_path / "cache" / "frames.npy", mmap_mode="r")
    assert frames.shape == (int(cache.num_frames.sum()), DIM)


def test_unchanged_sources_reuse_the_cache(tmp_path, shards, monkeypatch):
    _open(shards, tmp_path / "cache")
    manifest = tmp_path / "cache" / "manifest.json"
    before = manifest.stat().st_mtime_ns

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt although nothing changed")

    monkeypatch.setattr(FrameCache, "build", no_build)
    cache = _open(shards, tmp_path / "cache")
    assert len(cache) == 21 and manifest.stat().st_mtime_ns == before


def test_a_changed_source_or_option_rebuilds_the_cache(tmp_path, shards):
    cache = _open(shards, tmp_path / "cache")
    assert len(cache) == 21
    _write(shards[1], _videos(np.random.default_rng(5), 4, start=500))  # rewrite a shard
    os.utime(shards[1], ns=(1, 1))  # even with an old mtime, the size differs
    cache = _open(shards, tmp_path / "cache")
    assert len(cache) == 16 and cache.index_of("503") == 15
    cache = FrameCache.for_tfrecords(shards, tmp_path / "cache", frame_key="frame_feature", frame_dim=DIM)
    assert [c["name"] for c in cache.manifest["columns"]] == ["id"]  # other meta keys: rebuilt
    cache = FrameCache.for_tfrecords(shards[:1], tmp_path / "cache", frame_key="frame_feature", frame_dim=DIM)
    assert len(cache) == 12
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".cache")]
    assert leftovers == []


def test_a_failed_build_leaves_the_old_cache_untouched(tmp_path, shards):
    _open(shards, tmp_path / "cache")

    def records():
        yield {"id": [b"x"], "frame_feature": np.zeros((2, DIM), np.float16)}
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        FrameCache.build(tmp_path / "cache", records(), frame_key="frame_feature", frame_dim=DIM)
    assert len(FrameCache.open(tmp_path / "cache")) == 21
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tfrecords", "b.tfrecords", "cache"]


def test_wrong_frame_size_is_reported_with_the_record_id(tmp_path):
    records = [{"id": [b"v7"], "frame_feature": [b"\x00" * 6]}]
    with pytest.raises(ValueError, match="b'v7'.*6 bytes, expected 32"):
        FrameCache.build(tmp_path / "c", records, frame_key="frame_feature", frame_dim=DIM)


def test_youtube8m_sequence_examples_concatenate_rgb_and_audio(tmp_path):
    rng = np.random.default_rng(3)
    videos = []
    for i, steps in enumerate([4, 0, 2]):
        rgb = rng.integers(0, 256, (steps, 8), dtype=np.uint8)
        audio = rng.integers(0, 256, (steps, 2), dtype=np.uint8)
        videos.append((f"yt{i}", rgb, audio))
    path = tmp_path / "yt.tfrecords"
    write_tfrecord(
        path,
        [
            encode_sequence_example(
                {"id": vid, "labels": [i, 7]},
                {"rgb": [r.tobytes() for r in rgb], "audio": [a.tobytes() for a in audio]},
            )
            for i, (vid, rgb, audio) in enumerate(videos)
        ],
    )
    cache = FrameCache.for_tfrecords(
        path,
        tmp_path / "cache",
        frame_key=("rgb", "audio"),
        frame_dim=(8, 2),
        frame_dtype=np.uint8,
        meta_keys=("labels",),
        sequence=True,
    )
    for i, (vid, rgb, audio) in enumerate(videos):
        rec = cache[cache.index_of(vid)]
        np.testing.assert_array_equal(rec["frames"], np.concatenate([rgb, audio], axis=1))
        assert rec["frames"].dtype == np.uint8 and rec["labels"].tolist() == [i, 7]


def test_meta_gives_the_metadata_without_frames(tmp_path):
    records = [
        {"id": [b"a"], "title": [b"x"], "frame_feature": [b"\x00\x3c" * 4] * 2},
        {"id": [b"b"], "title": [b""]},
    ]
    cache = FrameCache.build(
        tmp_path / "c", records, frame_key="frame_feature", frame_dim=4, meta_keys=("title",)
    )
    assert cache.meta(0) == {"id": [b"a"], "title": [b"x"]}
    assert cache.meta(1)["id"] == [b"b"] and "frames" not in cache.meta(1)
    assert cache[0]["frames"].shape == (2, 4) and cache[0]["title"] == [b"x"]
