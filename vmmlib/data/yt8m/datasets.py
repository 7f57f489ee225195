"""YouTube-8M items for training and inference: segment cutting, frame stores, torch Datasets, streaming.

How items are cut follows the seeds' readers (google/youtube-8m `readers.py`, seed 003 hughshaoqz:
Shao & Liu 2019, "BERT for Large-scale Video Segment Classification with Test-time Augmentation"):
an annotated 2019 segment is the 5 frames from `segment_start_time`; inference cuts every video into
bags at 0, 5, 10, ...; pretraining reads a random contiguous window or the whole video.

Datasets yield the shared batch keys: `frames` (T, 1152) float32, `frame_mask` (T,) float32,
`labels` (C,) float32, `label_weights` (C,) float32 (segments), `id` str ("vid" or "vid:start").
The record format (schema, parsing, classes, shards) is `vmmlib.data.yt8m.reader`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from vmmlib.data.record_checks import RecordRef, read_with_refs, record_error
from vmmlib.data.yt8m.reader import (
    AUDIO_DIM,
    CONTEXT_KEYS,
    FEATURE_DIM,
    FRAME_SCHEMA,
    MAX_FRAMES,
    NUM_CLASSES,
    RAW_DTYPES,
    RGB_DIM,
    SEGMENT_SIZE,
    SegmentClasses,
    multi_hot,
    parse_context,
    quantized_frames,
    read_video_level,
    video_frames,
)
from vmmlib.io import FrameCache, RecordError
from vmmlib.io.stream import TFRecordIterableDataset

# ------------------------------------------------------------------------------------------ segments


def _padded_rows(frames: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """frames[rows] with zero rows where a row index is past the end (the readers' zero padding)."""
    out = np.zeros((*rows.shape, frames.shape[1]), np.float32)
    valid = (rows >= 0) & (rows < len(frames))
    out[valid] = frames[rows[valid]]
    return out


def _first_seen(starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique values in first-seen order (as `tf.unique`) and each entry's position among them."""
    unique, first, inverse = np.unique(starts, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return unique[order], rank[inverse.reshape(-1)]


def cut_segments(
    frames: np.ndarray,
    segment_start_times: Sequence[int],
    segment_labels: Sequence[int],
    segment_scores: Sequence[float],
    *,
    num_classes: int = NUM_CLASSES,
    segment_size: int = SEGMENT_SIZE,
    unrated_as_negative: bool = False,
) -> dict:
    """Cut a video's annotated segments as the v3 training reader does (google/hughshaoqz `readers.py`).

    Args:
        frames: (L, D) float32, the video's frames (already capped at 300).
        segment_start_times, segment_labels, segment_scores: the aligned context lists.
        unrated_as_negative: the seeds' training behaviour (their train.py never passes
            `label_weights` to the loss, so every unrated class is a negative): weights all ones.

    Returns:
        `start_times` (S,) int64, the unique start times in first-seen order (`tf.unique`);
        `frames` (S, segment_size, D) float32, zero rows past the end of the video;
        `frame_mask` (S, segment_size) float32, 1 on real frames;
        `labels` (S, C) float32, the score at each rated (segment, class), 0 elsewhere (a repeated
        pair keeps its last score); `label_weights` (S, C) float32, 1 at rated entries (or all ones).
    """
    starts = np.asarray(segment_start_times, np.int64)
    classes = np.asarray(segment_labels, np.int64)
    scores = np.asarray(segment_scores, np.float32)
    if not len(starts) == len(classes) == len(scores):
        raise ValueError("segment_start_times, segment_labels and segment_scores differ in length")
    if classes.size and (classes.min() < 0 or classes.max() >= num_classes):
        raise ValueError(f"segment label out of range [0, {num_classes})")
    unique, seg = _first_seen(starts)
    rows = unique[:, None] + np.arange(segment_size)[None, :]
    labels = np.zeros((len(unique), num_classes), np.float32)
    labels[seg, classes] = scores
    if unrated_as_negative:
        weights = np.ones_like(labels)
    else:
        weights = np.zeros_like(labels)
        weights[seg, classes] = 1.0
    return {
        "start_times": unique,
        "frames": _padded_rows(frames, rows),
        "frame_mask": ((rows >= 0) & (rows < len(frames))).astype(np.float32),
        "labels": labels,
        "label_weights": weights,
    }


def _bag_rows(start: int, num_frames: int, shift: int, segment_size: int, max_frames: int):
    """Rows of the unrolled frames feeding bag `start` after `np.roll(padded, shift, axis=0)`, and the
    seed's mask (first min(size, num_frames - start) positions, whatever the shift)."""
    positions = start + np.arange(segment_size)
    rows = np.where(positions < max_frames, (positions - shift) % max_frames, max_frames)
    mask = (np.arange(segment_size) < min(segment_size, num_frames - start)).astype(np.float32)
    return rows, mask


def inference_segments(
    frames: np.ndarray, *, shift: int = 0, segment_size: int = SEGMENT_SIZE, max_frames: int = MAX_FRAMES
) -> dict:
    """Consecutive bags at starts 0, 5, 10, ... as hughshaoqz `inference.get_segments` (SPEC §4.7).

    With TTA `shift` the zero-padded (max_frames, D) matrix is `np.roll`ed along time first, so bag k
    holds original frames 5k − s ... 5k − s + 4, wrapping around the 300-frame buffer; its id stays
    `vid:5k`. There are ceil(L / 5) bags (L = num_frames, unchanged by the shift).

    Returns:
        `start_times` (S,) int64, `frames` (S, segment_size, D) float32, `frame_mask` (S, segment_size)
        float32: the seed's per-bag `num_frames` = min(5, L − 5k), not moved by the roll.
    """
    frames = frames[:max_frames]
    padded = np.zeros((max_frames, frames.shape[1]), np.float32)
    padded[: len(frames)] = frames
    rolled = np.roll(padded, shift, axis=0)
    starts = np.arange(0, len(frames), segment_size, dtype=np.int64)
    # zero rows after the buffer, for a last bag running past max_frames (when 5 does not divide it)
    rolled = np.concatenate([rolled, np.zeros((segment_size, frames.shape[1]), np.float32)])
    bags = np.stack([rolled[s : s + segment_size] for s in starts]) if len(starts) else rolled[:0, None]
    masks = [_bag_rows(int(s), len(frames), shift, segment_size, max_frames)[1] for s in starts]
    return {
        "start_times": starts,
        "frames": bags.reshape(len(starts), segment_size, frames.shape[1]),
        "frame_mask": np.stack(masks) if masks else np.zeros((0, segment_size), np.float32),
    }


def window_rows(num_frames: int, window: int, u: float | None) -> tuple[np.ndarray, np.ndarray]:
    """A contiguous window of `window` frames as google's `SampleRandomSequence`.

    Start = floor(u · (max(L − window, 0) + 1)) for u ∈ [0, 1) (u=None: the centred window); rows past
    the last frame repeat it, as the seed does. Returns rows (window,) int64 and mask (window,) float32
    (1 where the row is a distinct real frame). L = 0 gives rows of −1 and an all-zero mask.
    """
    span = max(num_frames - window, 0)
    start = span // 2 if u is None else min(int(u * (span + 1)), span)
    positions = start + np.arange(window)
    if num_frames == 0:
        return np.full(window, -1, np.int64), np.zeros(window, np.float32)
    return np.minimum(positions, num_frames - 1), (positions < num_frames).astype(np.float32)


# ------------------------------------------------------------------------------------------ datasets


class FrameStore:
    """Frame-level videos of some shards with random access by position.

    Frames stay uint8 (1152 bytes per second) and are dequantised per item: in memory by default,
    memory-mapped from a `FrameCache` (built on first use, reused while the shards are unchanged)
    when `cache_dir` is given. The context lists (`labels`, `segment_*`) are kept in memory as
    `meta[i]` (see `parse_frame_record` for the keys). Every record is checked on opening: an error
    (no id, segment lists or rgb/audio of different lengths) names the file and byte offset; `ref(i)`
    says where video i lives.
    """

    def __init__(self, paths: Sequence[str | Path], cache_dir: str | Path | None = None):
        self.paths = [Path(p) for p in paths]
        self.cache: FrameCache | None = None
        self._frames: list[np.ndarray] = []
        self.meta: list[dict] = []
        where = []  # (file number, record number in the file) of each video
        for f, path in enumerate(self.paths):
            if cache_dir is None:
                keys, raw = list(FRAME_SCHEMA), RAW_DTYPES
            else:  # context only: the frame lists are skipped undecoded (the cache holds them)
                keys, raw = CONTEXT_KEYS, None
            for ref, (context, lists) in read_with_refs(
                path, keys=keys, schema=FRAME_SCHEMA, sequence=True, raw_dtypes=raw
            ):
                self.meta.append(parse_context(context, ref))
                where.append((f, ref.index))
                if cache_dir is None:
                    self._frames.append(quantized_frames(lists, self.meta[-1]["id"], ref))
        self._where = np.asarray(where, np.int64).reshape(-1, 2)
        if cache_dir is not None:
            self.cache = self._open_cache(cache_dir)
        self.ids = [m["id"] for m in self.meta]

    def _open_cache(self, cache_dir: str | Path) -> FrameCache:
        try:
            cache = FrameCache.for_tfrecords(
                self.paths,
                cache_dir,
                frame_key=("rgb", "audio"),
                frame_dim=(RGB_DIM, AUDIO_DIM),
                frame_dtype=np.uint8,
                sequence=True,
            )
        except ValueError:  # RecordError too: the reader's own check of the frames says it best
            located = self._frame_error()
            if located is None:
                raise
            raise located from None
        if len(self.meta) != len(cache):
            raise ValueError(f"cache at {cache_dir} holds {len(cache)} videos, the shards {len(self.meta)}")
        return cache

    def _frame_error(self) -> RecordError | None:
        """The first record whose frames do not parse (`quantized_frames`), as a located RecordError."""
        try:
            for path in self.paths:
                for ref, (context, lists) in read_with_refs(
                    path,
                    keys=["id", "rgb", "audio"],
                    schema=FRAME_SCHEMA,
                    sequence=True,
                    raw_dtypes=RAW_DTYPES,
                ):
                    quantized_frames(lists, parse_context(context, ref)["id"], ref)
        except RecordError as e:
            return e
        return None

    def __len__(self) -> int:
        return len(self.meta)

    def ref(self, i: int) -> RecordRef:
        """Where video i's record lives (file, record number; its byte offset on demand)."""
        f, index = self._where[i]
        return RecordRef(self.paths[int(f)], int(index))

    def quantized(self, i: int) -> np.ndarray:
        """Video i's frames, (L, 1152) uint8 (all of them: cap with `max_frames` when reading)."""
        return self._frames[i] if self.cache is None else self.cache.frames(i)

    def num_frames(self, i: int, max_frames: int = MAX_FRAMES) -> int:
        return min(len(self.quantized(i)), max_frames)


def _rows_of(quantized: np.ndarray, rows: np.ndarray, num_frames: int, normalize: bool) -> np.ndarray:
    """Dequantised frames at `rows` (zeros where a row is outside [0, num_frames))."""
    out = np.zeros((len(rows), FEATURE_DIM), np.float32)
    valid = (rows >= 0) & (rows < num_frames)
    out[valid] = video_frames(quantized[rows[valid]], max_frames=len(rows), normalize=normalize)
    return out


def _video_item(quantized, meta, u, *, window, max_frames, normalize, num_classes) -> dict:
    num_frames = min(len(quantized), max_frames)
    if window is None:  # the whole video, zero-padded to max_frames
        rows = np.arange(max_frames)
        mask = (rows < num_frames).astype(np.float32)
    else:
        rows, mask = window_rows(num_frames, window, u)
    return {
        "frames": _rows_of(quantized, rows, num_frames, normalize),
        "frame_mask": mask,
        "labels": multi_hot(meta["labels"], num_classes),
        "id": meta["id"],
    }


class VideoDataset(Dataset):
    """Frame-level videos → video-label items (pretraining on v2 labels).

    Items: `frames` (T, 1152) float32, `frame_mask` (T,) float32, `labels` (num_classes,) float32
    multi-hot (zeros without labels), `id` str. T = `window` frames (the seed's BERT models read 5)
    or, with `window=None`, the whole video zero-padded to `max_frames`.

    Args:
        window: contiguous frames per item (`window_rows`: the start is drawn uniformly, and frames past
            a short video's end repeat its last frame, masked out), or None for the full sequence.
        random_window: draw the window start (training); False: the centred window (evaluation).
        seed: the draw for item i in epoch e depends only on (seed, e, i): same in any worker.
        normalize: per-frame L2 normalisation of the 1152-d vector (hughshaoqz).
    """

    def __init__(
        self,
        store: FrameStore,
        *,
        window: int | None = None,
        random_window: bool = True,
        max_frames: int = MAX_FRAMES,
        normalize: bool = False,
        num_classes: int = NUM_CLASSES,
        seed: int = 0,
    ):
        self.store, self.window, self.random_window = store, window, random_window
        self.max_frames, self.normalize, self.num_classes = max_frames, normalize, num_classes
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, i: int) -> dict:
        u = np.random.default_rng([self.seed, self.epoch, i]).random() if self.random_window else None
        return _video_item(
            self.store.quantized(i),
            self.store.meta[i],
            u,
            window=self.window,
            max_frames=self.max_frames,
            normalize=self.normalize,
            num_classes=self.num_classes,
        )


class SegmentDataset(Dataset):
    """The annotated 5-frame segments of v3 videos (fine-tuning, local validation), one item each.

    Items: `frames` (5, 1152) float32 (zero rows past the video's end), `frame_mask` (5,) float32,
    `labels` (C,) float32 = the rated score at each rated class, `label_weights` (C,) float32 = 1 at
    rated classes (all ones with `unrated_as_negative`, the seeds' training), `id` "vid:start".
    C = 3,862, or the K whitelisted classes when `classes` is given (rated classes outside it dropped).
    Segments follow `cut_segments`: unique start times per video in first-seen order.
    """

    def __init__(
        self,
        store: FrameStore,
        *,
        classes: SegmentClasses | None = None,
        unrated_as_negative: bool = False,
        normalize: bool = False,
        num_classes: int = NUM_CLASSES,
        segment_size: int = SEGMENT_SIZE,
        max_frames: int = MAX_FRAMES,
    ):
        self.store, self.classes, self.unrated_as_negative = store, classes, unrated_as_negative
        self.normalize, self.num_classes = normalize, num_classes
        self.segment_size, self.max_frames = segment_size, max_frames
        self.index: list[tuple[int, int, np.ndarray, np.ndarray]] = []  # (video, start, classes, scores)
        for i, meta in enumerate(store.meta):
            starts = meta["segment_start_times"]
            if not len(starts):
                continue
            if meta["segment_labels"].min() < 0 or meta["segment_labels"].max() >= num_classes:
                where = store.ref(i) if hasattr(store, "ref") else None
                raise record_error(
                    f"video {meta['id']}: segment label out of range [0, {num_classes})", where
                )
            unique, seg = _first_seen(starts)
            for k, start in enumerate(unique):
                pick = seg == k
                self.index.append((i, int(start), meta["segment_labels"][pick], meta["segment_scores"][pick]))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, j: int) -> dict:
        i, start, classes, scores = self.index[j]
        quantized = self.store.quantized(i)
        num_frames = min(len(quantized), self.max_frames)
        rows = start + np.arange(self.segment_size)
        labels = np.zeros(self.num_classes, np.float32)
        labels[classes] = scores
        weights = np.ones_like(labels) if self.unrated_as_negative else np.zeros_like(labels)
        weights[classes] = 1.0
        if self.classes is not None:
            labels, weights = self.classes.to_subset(labels), self.classes.to_subset(weights)
        return {
            "frames": _rows_of(quantized, rows, num_frames, self.normalize),
            "frame_mask": ((rows >= 0) & (rows < num_frames)).astype(np.float32),
            "labels": labels,
            "label_weights": weights,
            "id": f"{self.store.ids[i]}:{start}",
        }


class InferenceSegmentDataset(Dataset):
    """Every video cut into bags at 0, 5, 10, ... (`inference_segments`), one item per bag.

    Items: `frames` (5, 1152) float32, `frame_mask` (5,) float32 (the seed's per-bag num_frames),
    `id` "vid:5k". `shift` is the TTA roll of SPEC §4.7 (frames wrap around the 300-frame buffer).
    """

    def __init__(
        self,
        store: FrameStore,
        *,
        shift: int = 0,
        normalize: bool = False,
        segment_size: int = SEGMENT_SIZE,
        max_frames: int = MAX_FRAMES,
    ):
        self.store, self.shift, self.normalize = store, shift, normalize
        self.segment_size, self.max_frames = segment_size, max_frames
        self.index = [
            (i, start)
            for i in range(len(store))
            for start in range(0, store.num_frames(i, max_frames), segment_size)
        ]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, j: int) -> dict:
        i, start = self.index[j]
        quantized = self.store.quantized(i)
        num_frames = min(len(quantized), self.max_frames)
        rows, mask = _bag_rows(start, num_frames, self.shift, self.segment_size, self.max_frames)
        return {
            "frames": _rows_of(quantized, rows, num_frames, self.normalize),
            "frame_mask": mask,
            "id": f"{self.store.ids[i]}:{start}",
        }


class VideoLevelDataset(Dataset):
    """Video-level Examples in memory (4.6 KB a video). Items: `frames` (1, 1152) float32 =
    mean_rgb ‖ mean_audio, `frame_mask` (1,) ones, `labels` (num_classes,) multi-hot, `id`."""

    def __init__(self, paths: Sequence[str | Path], *, num_classes: int = NUM_CLASSES):
        records = list(read_video_level(paths))
        self.ids = [r["id"] for r in records]
        self.features = np.zeros((len(records), FEATURE_DIM), np.float32)
        for row, r in enumerate(records):
            self.features[row] = np.concatenate([r["mean_rgb"], r["mean_audio"]])
        self._labels = [r["labels"] for r in records]
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {
            "frames": self.features[i : i + 1].copy(),
            "frame_mask": np.ones(1, np.float32),
            "labels": multi_hot(self._labels[i], self.num_classes),
            "id": self.ids[i],
        }


class _VideoItems:
    """Picklable record → item transform of `VideoStream` (its epoch follows `set_epoch`)."""

    def __init__(self, **options):
        self.seed, self.random_window = options.pop("seed"), options.pop("random_window")
        self.options, self.epoch = options, 0

    def __call__(self, record: tuple[dict, dict]) -> dict:
        context, lists = record
        meta = parse_context(context)
        key = zlib.crc32(meta["id"].encode("utf-8"))
        u = np.random.default_rng([self.seed, self.epoch, key]).random() if self.random_window else None
        return _video_item(quantized_frames(lists, meta["id"]), meta, u, **self.options)


class VideoStream(TFRecordIterableDataset):
    """`VideoDataset` items streamed from frame-level shards with bounded memory (pretraining at full
    scale: no cache, shards split across workers and ranks, a seeded shuffle buffer; see
    `vmmlib.io.stream`). The window draw depends on (seed, epoch, video id); call `set_epoch`."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        *,
        window: int | None = None,
        random_window: bool = True,
        max_frames: int = MAX_FRAMES,
        normalize: bool = False,
        num_classes: int = NUM_CLASSES,
        seed: int = 0,
        shuffle_buffer: int = 0,
        **stream_kwargs,
    ):
        self.items = _VideoItems(
            window=window,
            random_window=random_window,
            max_frames=max_frames,
            normalize=normalize,
            num_classes=num_classes,
            seed=seed,
        )
        super().__init__(
            [str(p) for p in paths],
            self.items,
            keys=["id", "labels", "rgb", "audio"],
            schema=FRAME_SCHEMA,
            sequence=True,
            raw_dtypes=RAW_DTYPES,
            seed=seed,
            shuffle_buffer=shuffle_buffer,
            **stream_kwargs,
        )
        self.items.epoch = self.epoch

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.items.epoch = epoch
