"""YouTube-8M data (2018 v2 frame/video level, 2019 v3 segments), in its exact on-disk layout (SPEC §1.4).

    data_dir/
      frame/train/train{XXXX}.tfrecord        v2 SequenceExamples: id, labels; rgb, audio per second
      frame/validate/validate{XXXX}.tfrecord  v3: id, labels, segment_{start_times,labels,scores}
      frame/test/test{XXXX}.tfrecord          v3: id and features only
      video/train/train{XXXX}.tfrecord        v2 Examples: id, labels, mean_rgb[1024], mean_audio[128]
      segment_label_ids.csv                   header `Index`, the 1,000 rated classes
      vocabulary.csv                          (optional) the 3,862 classes

Frames are uint8 (1024 rgb + 128 audio per second), dequantised as google's `utils.Dequantize`:
`x = q * 4/255 + 4/512 - 2`. Readers cap videos at 300 frames. A 2019 segment is the 5 frames from
`segment_start_time`; inference cuts every video into bags at 0, 5, 10, ... (seed 003, hughshaoqz:
Shao & Liu 2019, "BERT for Large-scale Video Segment Classification with Test-time Augmentation").

Datasets yield the shared batch keys: `frames` (T, 1152) float32, `frame_mask` (T,) float32,
`labels` (C,) float32, `label_weights` (C,) float32 (segments), `id` str ("vid" or "vid:start").
"""

from __future__ import annotations

import glob
import re
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from vmmlib.data.folds import _check_fold
from vmmlib.io import FrameCache, read_examples
from vmmlib.io.stream import TFRecordIterableDataset

NUM_CLASSES = 3862  # v2 vocabulary
NUM_SEGMENT_CLASSES = 1000  # classes rated in v3 (segment_label_ids.csv)
RGB_DIM, AUDIO_DIM = 1024, 128
FEATURE_DIM = RGB_DIM + AUDIO_DIM
MAX_FRAMES = 300
SEGMENT_SIZE = 5
MIN_QUANTIZED, MAX_QUANTIZED = -2.0, 2.0
CONTEXT_KEYS = ("id", "labels", "segment_start_times", "segment_labels", "segment_scores")
FRAME_SCHEMA = {
    "id": "bytes",
    "labels": "int64",
    "segment_start_times": "int64",
    "segment_labels": "int64",
    "segment_scores": "float",
    "rgb": "bytes",
    "audio": "bytes",
}
VIDEO_SCHEMA = {"id": "bytes", "labels": "int64", "mean_rgb": "float", "mean_audio": "float"}
RAW_DTYPES = {"rgb": (np.uint8, RGB_DIM), "audio": (np.uint8, AUDIO_DIM)}
SPLIT_GLOBS = {
    "frame/train": "frame/train/train*.tfrecord",
    "frame/validate": "frame/validate/validate*.tfrecord",
    "frame/test": "frame/test/test*.tfrecord",
    "video/train": "video/train/train*.tfrecord",
    "video/validate": "video/validate/validate*.tfrecord",
    "video/test": "video/test/test*.tfrecord",
}
SPLITS = tuple(SPLIT_GLOBS)
# hughshaoqz enumerates GCS validate shards "xy" with y the outer loop over this alphabet (SPEC §1.4)
_GCS_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


# ------------------------------------------------------------------------------------------ features


def dequantize(
    q: np.ndarray, max_value: float = MAX_QUANTIZED, min_value: float = MIN_QUANTIZED
) -> np.ndarray:
    """uint8 → float32 as google's `utils.Dequantize`: `q * (max-min)/255 + (max-min)/512 + min`."""
    value_range = max_value - min_value
    scale, bias = np.float32(value_range / 255.0), np.float32(value_range / 512.0 + min_value)
    return np.asarray(q, np.float32) * scale + bias


def quantize(x: np.ndarray, max_value: float = MAX_QUANTIZED, min_value: float = MIN_QUANTIZED) -> np.ndarray:
    """float → uint8 as the official feature extractor: clip, `(x - min) * 255/(max-min)`, round.

    `quantize(dequantize(q)) == q` for every q; `dequantize(quantize(x))` is within one step (4/255)
    of x inside [min, max] (dequantisation adds half a step, 4/512, to the rounded value).
    """
    x = np.clip(np.asarray(x, np.float32), min_value, max_value)
    return np.round((x - np.float32(min_value)) * np.float32(255.0 / (max_value - min_value))).astype(
        np.uint8
    )


def l2_normalize(frames: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Per-frame L2 normalisation as `tf.nn.l2_normalize(x, -1)`: x / sqrt(max(Σx², eps)); zeros stay zero."""
    sumsq = np.einsum("...d,...d->...", frames, frames)[..., None]
    return (frames / np.sqrt(np.maximum(sumsq, eps))).astype(np.float32)


def multi_hot(class_ids: Sequence[int], num_classes: int = NUM_CLASSES) -> np.ndarray:
    """(num_classes,) float32 with 1 at each class id. Raises ValueError on an id out of range."""
    ids = np.asarray(class_ids, np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
        raise ValueError(
            f"class id out of range [0, {num_classes}): {ids[(ids < 0) | (ids >= num_classes)][0]}"
        )
    out = np.zeros(num_classes, np.float32)
    out[ids] = 1.0
    return out


def _quantized_frames(feature_lists: dict, vid: str) -> np.ndarray:
    """rgb ‖ audio of a decoded SequenceExample → (L, 1152) uint8 (raw arrays or lists of bytes)."""
    parts = []
    for key, dim in (("rgb", RGB_DIM), ("audio", AUDIO_DIM)):
        value = feature_lists.get(key)
        if value is None:
            value = np.zeros((0, dim), np.uint8)
        elif not isinstance(value, np.ndarray):  # per-step lists of bytes elements
            elements = [e for step in value for e in (step if isinstance(step, list) else [step])]
            bad = [len(e) for e in elements if len(e) != dim]
            if bad:
                raise ValueError(f"video {vid}: {key!r} element of {bad[0]} bytes, expected {dim}")
            value = np.frombuffer(b"".join(elements), np.uint8).reshape(-1, dim)
        if value.ndim != 2 or value.shape[1] != dim:
            raise ValueError(f"video {vid}: {key!r} has shape {value.shape}, expected (L, {dim})")
        parts.append(value)
    if len(parts[0]) != len(parts[1]):
        raise ValueError(f"video {vid}: {len(parts[0])} rgb frames but {len(parts[1])} audio frames")
    return np.concatenate(parts, axis=1)


def _context(record: dict) -> dict:
    ids = record.get("id")
    empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0, np.float32)
    meta = {"id": ids[0].decode("utf-8") if ids else ""}
    for key, empty in (("labels", empty_i), ("segment_start_times", empty_i), ("segment_labels", empty_i)):
        value = record.get(key)
        meta[key] = np.asarray(value, np.int64) if value is not None and len(value) else empty
    scores = record.get("segment_scores")
    meta["segment_scores"] = np.asarray(scores, np.float32) if scores is not None and len(scores) else empty_f
    n = {len(meta[k]) for k in ("segment_start_times", "segment_labels", "segment_scores")}
    if len(n) > 1:
        raise ValueError(f"video {meta['id']}: segment_start_times/labels/scores differ in length")
    return meta


def video_frames(
    quantized: np.ndarray, *, max_frames: int = MAX_FRAMES, normalize: bool = False
) -> np.ndarray:
    """(L, 1152) uint8 → the first min(L, max_frames) frames dequantised, (L', 1152) float32,
    optionally L2-normalised per frame (hughshaoqz)."""
    frames = dequantize(quantized[:max_frames])
    return l2_normalize(frames) if normalize else frames


def parse_frame_record(
    context: dict, feature_lists: dict, *, max_frames: int = MAX_FRAMES, normalize: bool = False
) -> dict:
    """A decoded frame-level SequenceExample → `id`, `labels`, `segment_start_times`, `segment_labels`
    (int64), `segment_scores` (float32) (empty when absent), `frames` (L, 1152) float32 with
    L = `num_frames` = min(len, max_frames), rgb ‖ audio dequantised, optionally L2-normalised per frame."""
    meta = _context(context)
    frames = video_frames(
        _quantized_frames(feature_lists, meta["id"]), max_frames=max_frames, normalize=normalize
    )
    return {**meta, "frames": frames, "num_frames": len(frames)}


def read_frame_level(
    paths: Sequence[str | Path], *, max_frames: int = MAX_FRAMES, normalize: bool = False
) -> Iterator[dict]:
    """Stream parsed frame-level videos (see `parse_frame_record`) from SequenceExample shards, in order."""
    for path in paths:
        for context, lists in read_examples(
            path, keys=list(FRAME_SCHEMA), schema=FRAME_SCHEMA, sequence=True, raw_dtypes=RAW_DTYPES
        ):
            yield parse_frame_record(context, lists, max_frames=max_frames, normalize=normalize)


def parse_video_record(record: dict) -> dict:
    """A decoded video-level Example → `id`, `labels` int64, `mean_rgb` (1024,), `mean_audio` (128,) float32."""
    meta = _context(record)
    out = {"id": meta["id"], "labels": meta["labels"]}
    for key, dim in (("mean_rgb", RGB_DIM), ("mean_audio", AUDIO_DIM)):
        value = np.asarray(record.get(key, np.zeros(0, np.float32)), np.float32)
        if value.shape != (dim,):
            raise ValueError(f"video {meta['id']}: {key!r} has {value.size} values, expected {dim}")
        out[key] = value
    return out


def read_video_level(paths: Sequence[str | Path]) -> Iterator[dict]:
    """Stream parsed video-level records (see `parse_video_record`), in order."""
    for path in paths:
        for record in read_examples(path, keys=list(VIDEO_SCHEMA), schema=VIDEO_SCHEMA):
            yield parse_video_record(record)


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


# ------------------------------------------------------------------------------------------ classes


def read_segment_label_ids(path: str | Path) -> np.ndarray:
    """`segment_label_ids.csv` → (K,) int64 class ids in file order; non-integer lines (the `Index`
    header) are skipped, as the seed's inference does."""
    ids = []
    for line in Path(path).read_text().splitlines():
        try:
            ids.append(int(line.strip().split(",")[0]))
        except ValueError:
            continue
    return np.asarray(ids, np.int64)


class SegmentClasses:
    """The rated classes (the 1,000 of `segment_label_ids.csv`) inside the 3,862-class space."""

    def __init__(self, class_ids: Sequence[int], num_classes: int = NUM_CLASSES):
        self.class_ids = np.asarray(class_ids, np.int64)  # (K,), file order
        self.num_classes = num_classes
        if len(set(self.class_ids.tolist())) != len(self.class_ids):
            raise ValueError("duplicate class ids in the segment class list")
        if self.class_ids.size and (self.class_ids.min() < 0 or self.class_ids.max() >= num_classes):
            raise ValueError(f"segment class ids must lie in [0, {num_classes})")
        self._column = {int(c): i for i, c in enumerate(self.class_ids)}

    @classmethod
    def read(cls, path: str | Path, num_classes: int = NUM_CLASSES) -> SegmentClasses:
        return cls(read_segment_label_ids(path), num_classes)

    def __len__(self) -> int:
        return len(self.class_ids)

    def __contains__(self, class_id: int) -> bool:
        return int(class_id) in self._column

    def column(self, class_id: int) -> int:
        """Column of `class_id` in the K-class space; KeyError if not whitelisted."""
        return self._column[int(class_id)]

    @property
    def mask(self) -> np.ndarray:
        """(num_classes,) float32, 1 at rated classes: the seed's `whitelisted_cls_mask`."""
        out = np.zeros(self.num_classes, np.float32)
        out[self.class_ids] = 1.0
        return out

    def to_subset(self, x: np.ndarray) -> np.ndarray:
        """(..., num_classes) → (..., K): the whitelisted columns, in file order."""
        return np.asarray(x)[..., self.class_ids]

    def to_full(self, x: np.ndarray) -> np.ndarray:
        """(..., K) → (..., num_classes), zeros at classes that are not whitelisted."""
        x = np.asarray(x)
        out = np.zeros((*x.shape[:-1], self.num_classes), x.dtype)
        out[..., self.class_ids] = x
        return out


# ------------------------------------------------------------------------------------------ shards


def split_files(data_dir: str | Path, split: str) -> list[Path]:
    """The shards of one split (`frame/train`, `frame/validate`, ...), sorted by name."""
    if split not in SPLIT_GLOBS:
        raise ValueError(f"unknown split {split!r}; valid choices: {', '.join(SPLITS)}")
    return [Path(p) for p in sorted(glob.glob(str(Path(data_dir) / SPLIT_GLOBS[split])))]


def check_layout(data_dir: str | Path) -> dict[str, list[Path]]:
    """Check `data_dir` holds the YouTube-8M layout; return the shards of every split present.

    Needs `segment_label_ids.csv`, v3 `frame/validate` shards and a training split (frame or video level).

    Raises:
        FileNotFoundError: naming what is missing.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"data_dir {root} does not exist (make a sample with `vmm sample yt8m {root}`)"
        )
    files = {split: split_files(root, split) for split in SPLITS}
    missing = [] if (root / "segment_label_ids.csv").is_file() else ["segment_label_ids.csv"]
    if not files["frame/validate"]:
        missing.append(SPLIT_GLOBS["frame/validate"])
    if not files["frame/train"] and not files["video/train"]:
        missing.append(f"{SPLIT_GLOBS['frame/train']} or {SPLIT_GLOBS['video/train']}")
    if missing:
        raise FileNotFoundError(f"{root} is not in the YouTube-8M layout: missing {', '.join(missing)}")
    return {split: paths for split, paths in files.items() if paths}


def _seed_order_key(path: str | Path) -> tuple:
    suffix = re.sub(r"^(train|validate|test)", "", Path(path).stem)
    if len(suffix) == 2 and all(c in _GCS_ALPHABET for c in suffix):  # GCS: second character outer
        return (0, _GCS_ALPHABET.index(suffix[1]), _GCS_ALPHABET.index(suffix[0]))
    return (1, Path(path).name)


def seed_shard_order(paths: Sequence[str | Path]) -> list[Path]:
    """Shards in hughshaoqz's enumeration order: local names `validate0000 ...` sorted; GCS two-character
    names `validateXY` with Y the outer loop over 0-9a-zA-Z (`00, 10, ..., Z0, 01, ...`)."""
    return [Path(p) for p in sorted(paths, key=_seed_order_key)]


def holdout_shards(paths: Sequence[str | Path], n_holdout: int = 300) -> tuple[list[Path], list[Path]]:
    """Seed 003's hold-out: the first `n_holdout` v3 validate shards (seed order) are the local OOF set,
    the rest fine-tune. Returns (holdout, finetune), disjoint, deterministic."""
    ordered = seed_shard_order(paths)
    if not 0 < n_holdout < len(ordered):
        raise ValueError(
            f"n_holdout must be in 1..{len(ordered) - 1} for {len(ordered)} shards, got {n_holdout}"
        )
    return ordered[:n_holdout], ordered[n_holdout:]


def shard_folds(paths: Sequence[str | Path], n_folds: int, fold: int) -> tuple[list[Path], list[Path]]:
    """Whole-shard folds: shard i (sorted by name) validates in fold i mod n_folds.

    Returns (train, val) shard lists; no video is split across them."""
    _check_fold(fold, n_folds)
    ordered = sorted(Path(p) for p in paths)
    if len(ordered) < n_folds:
        raise ValueError(f"{n_folds} folds need at least {n_folds} shards, have {len(ordered)}")
    val = ordered[fold::n_folds]
    return [p for p in ordered if p not in val], val


# ------------------------------------------------------------------------------------------ datasets


class FrameStore:
    """Frame-level videos of some shards with random access by position.

    Frames stay uint8 (1152 bytes per second) and are dequantised per item: in memory by default,
    memory-mapped from a `FrameCache` (built on first use, reused while the shards are unchanged)
    when `cache_dir` is given. The context lists (`labels`, `segment_*`) are kept in memory as
    `meta[i]` (see `parse_frame_record` for the keys).
    """

    def __init__(self, paths: Sequence[str | Path], cache_dir: str | Path | None = None):
        self.paths = [Path(p) for p in paths]
        self.cache: FrameCache | None = None
        self._frames: list[np.ndarray] = []
        self.meta: list[dict] = []
        if cache_dir is None:
            for path in self.paths:
                for context, lists in read_examples(
                    path, keys=list(FRAME_SCHEMA), schema=FRAME_SCHEMA, sequence=True, raw_dtypes=RAW_DTYPES
                ):
                    self.meta.append(_context(context))
                    self._frames.append(_quantized_frames(lists, self.meta[-1]["id"]))
        else:
            self.cache = FrameCache.for_tfrecords(
                self.paths,
                cache_dir,
                frame_key=("rgb", "audio"),
                frame_dim=(RGB_DIM, AUDIO_DIM),
                frame_dtype=np.uint8,
                sequence=True,
            )
            for path in self.paths:  # context only: the frame lists are skipped undecoded
                for context, _ in read_examples(path, keys=CONTEXT_KEYS, schema=FRAME_SCHEMA, sequence=True):
                    self.meta.append(_context(context))
            if len(self.meta) != len(self.cache):
                raise ValueError(
                    f"cache at {cache_dir} holds {len(self.cache)} videos, the shards {len(self.meta)}"
                )
        self.ids = [m["id"] for m in self.meta]

    def __len__(self) -> int:
        return len(self.meta)

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
                raise ValueError(f"video {meta['id']}: segment label out of range [0, {num_classes})")
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
        meta = _context(context)
        key = zlib.crc32(meta["id"].encode("utf-8"))
        u = np.random.default_rng([self.seed, self.epoch, key]).random() if self.random_window else None
        return _video_item(_quantized_frames(lists, meta["id"]), meta, u, **self.options)


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
