"""Deterministic sample data for YouTube-8M (2018 v2 + 2019 v3 segments), in its exact layout.

Written (SPEC §1.4; see `vmmlib.data.yt8m.reader`):

    frame/train/train{XXXX}.tfrecord        v2 SequenceExamples: id, labels; rgb/audio uint8 per second
    frame/validate/validate{XXXX}.tfrecord  v3: id, labels, segment_start_times/end_times/labels/scores
    frame/test/test{XXXX}.tfrecord          v3: id, rgb, audio (no labels)
    video/train/train{XXXX}.tfrecord        v2 Examples of the frame/train videos: mean_rgb, mean_audio, labels
    segment_label_ids.csv                   `Index` + the 1,000 rated class ids
    vocabulary.csv                          the 3,862 classes (real header; synthetic names)

Planted structure: latent topics each own a few whitelisted classes (and one class outside the
whitelist). A video is 2-3 consecutive topic segments over time, each showing one (topic, class);
its rgb/audio frames are the topic centroid + the class centroid + a per-video offset + per-frame
noise, quantised as the real features. Video labels are the classes shown (plus, often, the topic's
non-whitelisted class). Validate videos rate one class (sometimes two) on ~5 segments aligned to
multiples of 5: score 1 where most of the 5 frames show that class, 0 elsewhere; everything else is
unrated. Topics are far apart, classes of one topic only slightly (`CLASS_SCALE`), so a model reading
5 frames tells segment classes far above chance without saturating the segment mAP (nearest class
centroid: ~0.8-0.95 vs ~0.55 for random scores). The class space stays 3,862 and the whitelist
1,000; only a few classes are used. Same arguments → byte-identical files.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from vmmlib.data._atomic import write_dataset_dir
from vmmlib.data.yt8m.reader import (
    AUDIO_DIM,
    NUM_CLASSES,
    NUM_SEGMENT_CLASSES,
    RGB_DIM,
    SEGMENT_SIZE,
    dequantize,
    quantize,
)
from vmmlib.io import FloatList, Int64List, TFRecordWriter, encode_example, encode_sequence_example

_ID_CHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
TOPIC_SCALE, CLASS_SCALE, VIDEO_SCALE, NOISE_SCALE = 0.32, 0.06, 0.4, 0.72  # total σ ≈ 0.89: ~2% clip at ±2
VOCAB_HEADER = [
    "Index",
    "TrainVideoCount",
    "KnowledgeGraphId",
    "Name",
    "WikiUrl",
    "Vertical1",
    "Vertical2",
    "Vertical3",
    "WikiDescription",
]


class _World:
    """The latent topics, their classes and feature centroids."""

    def __init__(self, rng: np.random.Generator, n_topics: int, classes_per_topic: int):
        self.n_topics = n_topics
        self.whitelist = np.sort(rng.choice(NUM_CLASSES, size=NUM_SEGMENT_CLASSES, replace=False))
        outside = np.setdiff1d(np.arange(NUM_CLASSES), self.whitelist)
        used = rng.choice(self.whitelist, size=n_topics * classes_per_topic, replace=False)
        self.topic_classes = used.reshape(n_topics, classes_per_topic)  # whitelisted, rated
        self.topic_extra = rng.choice(outside, size=n_topics, replace=False)  # video labels only
        zipf = 1.0 / np.arange(1, classes_per_topic + 1) ** 0.8
        self.class_prob = zipf / zipf.sum()
        dim = RGB_DIM + AUDIO_DIM
        self.topic_centroid = rng.normal(0.0, TOPIC_SCALE, (n_topics, dim)).astype(np.float32)
        self.class_centroid = {
            int(c): rng.normal(0.0, CLASS_SCALE, dim).astype(np.float32)
            for c in self.topic_classes.reshape(-1)
        }

    def pieces(self, rng: np.random.Generator, length: int) -> list[tuple[int, int, int, int]]:
        """2-3 consecutive (start, end, topic, class) pieces covering [0, length), each ≥ 6 frames."""
        n = 2 if length < 24 or rng.random() < 0.5 else 3
        while True:
            cuts = np.sort(rng.choice(np.arange(6, length - 5), size=n - 1, replace=False))
            bounds = [0, *cuts.tolist(), length]
            if min(np.diff(bounds)) >= 6:
                break
        topics = [int(rng.integers(self.n_topics))]
        for _ in range(n - 1):  # the next piece stays on topic (another class) or changes topic
            topics.append(topics[-1] if rng.random() < 0.3 else int(rng.integers(self.n_topics)))
        out, shown = [], set()
        for k, topic in enumerate(topics):
            choices = [c for c in self.topic_classes[topic] if int(c) not in shown]
            prob = np.array([self.class_prob[list(self.topic_classes[topic]).index(c)] for c in choices])
            cls = int(rng.choice(choices, p=prob / prob.sum()))
            shown.add(cls)
            out.append((bounds[k], bounds[k + 1], topic, cls))
        return out

    def video(self, rng: np.random.Generator, length: int):
        """Quantised (rgb, audio) frames, the pieces and the video labels of one video."""
        pieces = self.pieces(rng, length)
        dim = RGB_DIM + AUDIO_DIM
        frames = np.empty((length, dim), np.float32)
        offset = rng.normal(0.0, VIDEO_SCALE, dim).astype(np.float32)
        for start, end, topic, cls in pieces:
            mean = self.topic_centroid[topic] + self.class_centroid[cls] + offset
            frames[start:end] = mean + rng.normal(0.0, NOISE_SCALE, (end - start, dim)).astype(np.float32)
        q = quantize(frames)
        labels = {cls for *_, cls in pieces}
        for topic in {p[2] for p in pieces}:
            if rng.random() < 0.5:
                labels.add(int(self.topic_extra[topic]))
        return q[:, :RGB_DIM], q[:, RGB_DIM:], pieces, np.array(sorted(labels), np.int64)


def _segment_ratings(rng: np.random.Generator, pieces, length: int) -> list[tuple[int, int, float]]:
    """(start, class, score) ratings of a validate video: one class (sometimes two), ~5 segments each."""
    shown = sorted({cls for *_, cls in pieces})
    rated = rng.choice(shown, size=2 if len(shown) > 1 and rng.random() < 0.2 else 1, replace=False)
    starts = np.arange(0, length - SEGMENT_SIZE + 1, SEGMENT_SIZE)
    frame_class = np.empty(length, np.int64)
    for start, end, _, cls in pieces:
        frame_class[start:end] = cls
    out = []
    for cls in sorted(int(c) for c in rated):
        hits = np.array([(frame_class[s : s + SEGMENT_SIZE] == cls).sum() >= 3 for s in starts])
        pos, neg = starts[hits], starts[~hits]
        n_neg = min(len(neg), 5 - min(len(pos), int(rng.integers(1, 4))))
        n_pos = min(len(pos), 5 - n_neg)  # 5 ratings when the video has 5 aligned segments
        chosen = [(int(s), cls, 1.0) for s in rng.choice(pos, size=n_pos, replace=False)]
        chosen += [(int(s), cls, 0.0) for s in rng.choice(neg, size=n_neg, replace=False)]
        out += chosen
    return sorted(out)


def _write_shards(root: Path, pattern: str, records: list[bytes], shards: int) -> None:
    for s, part in enumerate(np.array_split(np.arange(len(records)), shards)):
        with TFRecordWriter(root / pattern.format(s)) as writer:
            for j in part:
                writer.write(records[j])


def _frame_record(vid: str, rgb: np.ndarray, audio: np.ndarray, context: dict) -> bytes:
    return encode_sequence_example(
        {"id": vid, **context},
        {"rgb": [row.tobytes() for row in rgb], "audio": [row.tobytes() for row in audio]},
    )


def write_yt8m_sample(
    out_dir: str | Path,
    *,
    videos: int = 240,
    validate_videos: int = 160,
    test_videos: int = 60,
    train_shards: int = 4,
    validate_shards: int = 8,
    test_shards: int = 2,
    n_topics: int = 8,
    classes_per_topic: int = 4,
    min_seconds: int = 20,
    max_seconds: int = 60,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write a YouTube-8M sample dataset in the exact on-disk layout of the real one.

    Args:
        out_dir: target folder; written atomically (a temporary sibling, then renamed).
        videos: v2 training videos (frame level, and the same videos at video level).
        validate_videos, test_videos: v3 videos with segment ratings / without labels.
        train_shards, validate_shards, test_shards: shards per split (`train0000.tfrecord`, ...).
        n_topics, classes_per_topic: the planted topics and the whitelisted classes each owns.
        min_seconds, max_seconds: video lengths (one frame per second; ≥ 20 for 2-3 topic pieces).
        seed: same seed and sizes → byte-identical files.

    Returns:
        The dataset folder.
    """
    if min_seconds < 20 or max_seconds < min_seconds or max_seconds > 300:
        raise ValueError(f"need 20 <= min_seconds <= max_seconds <= 300, got {min_seconds}, {max_seconds}")
    sizes = (videos, validate_videos, test_videos, train_shards, validate_shards, test_shards)
    return write_dataset_dir(
        out_dir,
        lambda tmp: _write(tmp, sizes, n_topics, classes_per_topic, (min_seconds, max_seconds), seed),
        overwrite=overwrite,
    )


def _write(root: Path, sizes, n_topics: int, classes_per_topic: int, seconds, seed: int) -> None:
    videos, validate_videos, test_videos, train_shards, validate_shards, test_shards = sizes
    rng = np.random.default_rng(seed)
    world = _World(rng, n_topics, classes_per_topic)
    total = videos + validate_videos + test_videos
    codes = rng.choice(len(_ID_CHARS) ** 4, size=total, replace=False)
    ids = iter(
        "".join(_ID_CHARS[(int(c) // len(_ID_CHARS) ** k) % len(_ID_CHARS)] for k in range(4)) for c in codes
    )
    lengths = iter(rng.integers(seconds[0], seconds[1] + 1, size=total).tolist())
    for sub in ("frame/train", "frame/validate", "frame/test", "video/train"):
        (root / sub).mkdir(parents=True)

    frame_train, video_train, counts = [], [], np.zeros(NUM_CLASSES, np.int64)
    for _ in range(videos):
        vid = next(ids)
        rgb, audio, _, labels = world.video(rng, next(lengths))
        counts[labels] += 1
        frame_train.append(_frame_record(vid, rgb, audio, {"labels": Int64List(labels)}))
        video_train.append(
            encode_example(
                {
                    "id": vid,
                    "labels": Int64List(labels),
                    "mean_rgb": FloatList(dequantize(rgb).mean(0)),
                    "mean_audio": FloatList(dequantize(audio).mean(0)),
                }
            )
        )
    _write_shards(root, "frame/train/train{:04d}.tfrecord", frame_train, train_shards)
    _write_shards(root, "video/train/train{:04d}.tfrecord", video_train, train_shards)

    validate = []
    for _ in range(validate_videos):
        vid, length = next(ids), next(lengths)
        rgb, audio, pieces, labels = world.video(rng, length)
        ratings = _segment_ratings(rng, pieces, length)
        starts = np.array([r[0] for r in ratings], np.int64)
        context = {
            "labels": Int64List(labels),
            "segment_start_times": Int64List(starts),
            "segment_end_times": Int64List(starts + SEGMENT_SIZE),
            "segment_labels": Int64List(np.array([r[1] for r in ratings], np.int64)),
            "segment_scores": FloatList(np.array([r[2] for r in ratings], np.float32)),
        }
        validate.append(_frame_record(vid, rgb, audio, context))
    _write_shards(root, "frame/validate/validate{:04d}.tfrecord", validate, validate_shards)

    test = []
    for _ in range(test_videos):
        vid = next(ids)
        rgb, audio, _, _ = world.video(rng, next(lengths))
        test.append(_frame_record(vid, rgb, audio, {}))
    _write_shards(root, "frame/test/test{:04d}.tfrecord", test, test_shards)

    (root / "segment_label_ids.csv").write_text("Index\n" + "".join(f"{c}\n" for c in world.whitelist))
    topic_of = {int(c): t for t, row in enumerate(world.topic_classes) for c in row}
    topic_of.update({int(c): t for t, c in enumerate(world.topic_extra)})
    with open(root / "vocabulary.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(VOCAB_HEADER)
        for c in range(NUM_CLASSES):
            topic = topic_of.get(c)
            vertical = f"Topic {topic}" if topic is not None else "(Unknown)"
            writer.writerow([c, int(counts[c]), f"/m/sample{c:04d}", f"Class {c}", "", vertical, "", "", ""])
