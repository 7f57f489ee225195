"""YouTube-8M records (2018 v2 frame/video level, 2019 v3 segments): layout, schema, parsing, classes, shards.

The exact on-disk layout (SPEC §1.4):

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

Every record is checked as it is parsed: a record without an id, rgb and audio of different lengths,
segment lists of different lengths or video-level means of the wrong size raise `vmmlib.io.RecordError`
naming the file and the record's byte offset. Frame features are uint8, so unlike QQ Browser's fp16
frames they cannot hold inf or NaN (no `nonfinite` option); the float32 video-level means can, and a
non-finite one is such an error too.

This module imports no torch (the sample writer and the submission tools use it); the torch Datasets
are in `vmmlib.data.yt8m.datasets`, the opened data folder (`load`, `YT8MData`) in `vmmlib.data.yt8m.folder`.
"""

from __future__ import annotations

import glob
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from vmmlib.data.folds import check_fold
from vmmlib.data.record_checks import RecordRef, decode_text, read_with_refs, record_error
from vmmlib.io.safe import InputError, iter_lines, read_csv

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


def quantized_frames(feature_lists: dict, vid: str, ref: RecordRef | None = None) -> np.ndarray:
    """rgb ‖ audio of a decoded SequenceExample → (L, 1152) uint8 (raw arrays or lists of bytes).

    Args:
        vid: the video id, and `ref` where its record lives, for the errors.

    Raises:
        RecordError: an element of the wrong size, or rgb and audio of different lengths.
    """
    parts = []
    for key, dim in (("rgb", RGB_DIM), ("audio", AUDIO_DIM)):
        value = feature_lists.get(key)
        if value is None:
            value = np.zeros((0, dim), np.uint8)
        elif not isinstance(value, np.ndarray):  # per-step lists of bytes elements
            elements = [e for step in value for e in (step if isinstance(step, list) else [step])]
            bad = [len(e) for e in elements if len(e) != dim]
            if bad:
                raise record_error(f"video {vid}: {key!r} element of {bad[0]} bytes, expected {dim}", ref)
            value = np.frombuffer(b"".join(elements), np.uint8).reshape(-1, dim)
        if value.ndim != 2 or value.shape[1] != dim:
            raise record_error(f"video {vid}: {key!r} has shape {value.shape}, expected (L, {dim})", ref)
        parts.append(value)
    if len(parts[0]) != len(parts[1]):
        raise record_error(f"video {vid}: {len(parts[0])} rgb frames but {len(parts[1])} audio frames", ref)
    return np.concatenate(parts, axis=1)


def parse_context(record: dict, ref: RecordRef | None = None) -> dict:
    """The context of a frame-level SequenceExample (or a video-level Example) → `id` str, `labels`,
    `segment_start_times`, `segment_labels` (int64) and `segment_scores` (float32), empty when absent.

    Raises:
        RecordError: no id (or an empty one), an id that is not UTF-8, or segment lists of different
            lengths (naming the file and offset when `ref` is given).
    """
    vid = decode_text(record.get("id"), "id", ref)
    if not vid:
        raise record_error("record has no id (its 'id' feature is missing or empty)", ref)
    empty_i, empty_f = np.zeros(0, np.int64), np.zeros(0, np.float32)
    meta = {"id": vid}
    for key, empty in (("labels", empty_i), ("segment_start_times", empty_i), ("segment_labels", empty_i)):
        value = record.get(key)
        meta[key] = np.asarray(value, np.int64) if value is not None and len(value) else empty
    scores = record.get("segment_scores")
    meta["segment_scores"] = np.asarray(scores, np.float32) if scores is not None and len(scores) else empty_f
    lengths = [len(meta[k]) for k in ("segment_start_times", "segment_labels", "segment_scores")]
    if len(set(lengths)) > 1:
        raise record_error(
            f"video {vid}: segment_start_times/labels/scores differ in length ({', '.join(map(str, lengths))})",
            ref,
        )
    return meta


def video_frames(
    quantized: np.ndarray, *, max_frames: int = MAX_FRAMES, normalize: bool = False
) -> np.ndarray:
    """(L, 1152) uint8 → the first min(L, max_frames) frames dequantised, (L', 1152) float32,
    optionally L2-normalised per frame (hughshaoqz)."""
    frames = dequantize(quantized[:max_frames])
    return l2_normalize(frames) if normalize else frames


def parse_frame_record(
    context: dict,
    feature_lists: dict,
    *,
    max_frames: int = MAX_FRAMES,
    normalize: bool = False,
    ref: RecordRef | None = None,
) -> dict:
    """A decoded frame-level SequenceExample → `id`, `labels`, `segment_start_times`, `segment_labels`
    (int64), `segment_scores` (float32) (empty when absent), `frames` (L, 1152) float32 with
    L = `num_frames` = min(len, max_frames), rgb ‖ audio dequantised, optionally L2-normalised per frame.

    Raises:
        RecordError: see `parse_context` and `quantized_frames` (`ref`: where the record lives).
    """
    meta = parse_context(context, ref)
    frames = video_frames(
        quantized_frames(feature_lists, meta["id"], ref), max_frames=max_frames, normalize=normalize
    )
    return {**meta, "frames": frames, "num_frames": len(frames)}


def read_frame_level(
    paths: Sequence[str | Path], *, max_frames: int = MAX_FRAMES, normalize: bool = False
) -> Iterator[dict]:
    """Stream parsed frame-level videos (see `parse_frame_record`) from SequenceExample shards, in order."""
    for path in paths:
        for ref, (context, lists) in read_with_refs(
            path, keys=list(FRAME_SCHEMA), schema=FRAME_SCHEMA, sequence=True, raw_dtypes=RAW_DTYPES
        ):
            yield parse_frame_record(context, lists, max_frames=max_frames, normalize=normalize, ref=ref)


def parse_video_record(record: dict, ref: RecordRef | None = None) -> dict:
    """A decoded video-level Example → `id`, `labels` int64, `mean_rgb` (1024,), `mean_audio` (128,) float32.

    Raises:
        RecordError: see `parse_context`; a mean of the wrong size or holding inf/NaN.
    """
    meta = parse_context(record, ref)
    out = {"id": meta["id"], "labels": meta["labels"]}
    for key, dim in (("mean_rgb", RGB_DIM), ("mean_audio", AUDIO_DIM)):
        value = np.asarray(record.get(key, np.zeros(0, np.float32)), np.float32)
        if value.shape != (dim,):
            raise record_error(f"video {meta['id']}: {key!r} has {value.size} values, expected {dim}", ref)
        if not np.isfinite(value).all():
            raise record_error(f"video {meta['id']}: {key!r} holds non-finite values (inf or NaN)", ref)
        out[key] = value
    return out


def read_video_level(paths: Sequence[str | Path]) -> Iterator[dict]:
    """Stream parsed video-level records (see `parse_video_record`), in order."""
    for path in paths:
        for ref, record in read_with_refs(path, keys=list(VIDEO_SCHEMA), schema=VIDEO_SCHEMA):
            yield parse_video_record(record, ref)


# ------------------------------------------------------------------------------------------ classes


def read_segment_label_ids(path: str | Path, num_classes: int | None = None) -> np.ndarray:
    """`segment_label_ids.csv` → (K,) int64 class ids in file order (the first column of each line).

    A non-integer first line is the `Index` header and is skipped, as the seed's inference does; any
    other non-integer line, a repeated id or one outside [0, num_classes) is an InputError naming the
    file and line (nothing is dropped silently).
    """
    ids, seen = [], {}
    for number, line in iter_lines(path, what="segment class list"):
        token = line.strip().split(",")[0].strip()
        if not token:
            continue
        if not token.isdigit() or len(token) > 9:
            if not ids and not seen and not any(c.isdigit() for c in token):
                seen[None] = number  # the header
                continue
            raise InputError(path, f"class id {token[:40]!r} is not a non-negative integer", f"line {number}")
        class_id = int(token)
        if class_id in seen:
            raise InputError(
                path, f"class id {class_id} repeated (first on line {seen[class_id]})", f"line {number}"
            )
        if num_classes is not None and class_id >= num_classes:
            raise InputError(path, f"class id {class_id} is outside [0, {num_classes})", f"line {number}")
        seen[class_id] = number
        ids.append(class_id)
    if not ids:
        raise InputError(path, "holds no class ids")
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
        return cls(read_segment_label_ids(path, num_classes), num_classes)

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
        InputError: naming what is missing.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(root, f"data_dir does not exist (make a sample with `vmm sample yt8m {root}`)")
    files = {split: split_files(root, split) for split in SPLITS}
    missing = [] if (root / "segment_label_ids.csv").is_file() else ["segment_label_ids.csv"]
    if not files["frame/validate"]:
        missing.append(SPLIT_GLOBS["frame/validate"])
    if not files["frame/train"] and not files["video/train"]:
        missing.append(f"{SPLIT_GLOBS['frame/train']} or {SPLIT_GLOBS['video/train']}")
    if missing:
        raise InputError(root, f"not in the YouTube-8M layout: missing {', '.join(missing)}")
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
    check_fold(fold, n_folds)
    ordered = sorted(Path(p) for p in paths)
    if len(ordered) < n_folds:
        raise ValueError(f"{n_folds} folds need at least {n_folds} shards, have {len(ordered)}")
    val = ordered[fold::n_folds]
    return [p for p in ordered if p not in val], val


def vertical_counts(data_dir: Path, label_counter: Counter, classes: SegmentClasses):
    """Label occurrences (a Series) by top-level vertical (vocabulary.csv `Vertical1`), else by whitelist
    membership."""
    import pandas as pd

    vocab = data_dir / "vocabulary.csv"
    if vocab.exists() or vocab.is_symlink():
        table = read_csv(vocab, what="vocabulary")  # every column: usecols would skip decoding the rest
        if not {"Index", "Vertical1"} <= set(table.columns):
            raise InputError(vocab, "needs the columns Index and Vertical1", "line 1")
        index = pd.to_numeric(table["Index"], errors="coerce")
        bad = (index.isna() | (index % 1 != 0) | index.duplicated()).to_numpy()
        if bad.any():
            row = int(bad.argmax())
            raise InputError(
                vocab, f"Index {table['Index'].iloc[row]!r} is not an integer or repeats", f"line {row + 2}"
            )
        vertical = dict(zip(index.astype(int), table["Vertical1"].fillna("(none)")))
        out: Counter = Counter()
        for label, n in label_counter.items():
            out[vertical.get(label, "(not in vocabulary)")] += n
        return pd.Series(out, name="videos", dtype=int)
    rated = sum(n for c, n in label_counter.items() if c in classes)
    return pd.Series(
        {"whitelisted (rated)": rated, "other": sum(label_counter.values()) - rated}, name="videos"
    )
