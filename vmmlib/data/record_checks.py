"""Checks the competition readers apply to each record, with errors that say where the record lives.

A reader that finds a bad record (no id, lists that disagree, a non-finite feature) raises
`vmmlib.io.RecordError` naming the file and the record's byte offset, as the io layer does for bad
framing or protobuf. A reader knows a record's position (file, index); `RecordRef` turns it into the
byte offset by reading the record headers only, and only when there is an error to report, so the
happy path costs nothing.

Float features can hold inf or NaN (an fp16 overflow in someone's feature extractor); one such frame
turns a training step, BatchNorm's running statistics and the evaluation into NaN. Readers apply one
of `NONFINITE_CHOICES` per video: `error` (the default: a `NonFiniteFeatureError` naming the file,
the offset and the video ids), `drop` (leave the video out) or `zero` (set the bad values to 0).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vmmlib.io import FrameCache, RecordError, read_examples, tfrecord_index

__all__ = [
    "NONFINITE_CHOICES",
    "NonFiniteFeatureError",
    "RecordRef",
    "cache_nonfinite_error",
    "check_nonfinite_choice",
    "decode_text",
    "finite_frames",
    "locate_record",
    "nonfinite_records",
    "nonfinite_rows",
    "read_with_refs",
    "record_error",
]

NONFINITE_CHOICES = ("error", "drop", "zero")
_NONFINITE_FILE = "nonfinite.json"  # the scan's result, kept inside the cache folder it describes
_FP16_EXPONENT = 0x7C00  # all exponent bits set: inf or NaN


class NonFiniteFeatureError(RecordError):
    """Non-finite values (inf, NaN) in a float feature.

    Attributes:
        video_ids: every video found with such values (the location names the first one).
    """

    def __init__(
        self,
        reason: str,
        path: str | os.PathLike | None = None,
        offset: int | None = None,
        video_ids: Sequence[str] = (),
    ):
        super().__init__(reason, path, offset)
        self.video_ids = list(video_ids)

    def __reduce__(self):  # keep the fields when pickled across DataLoader worker processes
        return (type(self), (self.reason, self.path, self.offset, self.video_ids))


@dataclass(frozen=True)
class RecordRef:
    """Record `index` (0-based, file order) of the TFRecord file `path`."""

    path: Path
    index: int

    def offset(self) -> int | None:
        """Byte offset of the record's start, from the record headers (None if the file lacks it now)."""
        try:
            offsets = tfrecord_index(self.path, verify_crc=False)
        except (OSError, RecordError):
            return None
        return int(offsets[self.index]) if 0 <= self.index < len(offsets) else None

    def error(self, reason: str) -> RecordError:
        """A `RecordError` naming this record's file and byte offset."""
        return RecordError(reason, self.path, self.offset())


def record_error(reason: str, ref: RecordRef | None) -> RecordError:
    """`ref.error(reason)`, or a RecordError without a location when the record came from nowhere."""
    return RecordError(reason) if ref is None else ref.error(reason)


def read_with_refs(path: str | os.PathLike, **read_kwargs: Any) -> Iterator[tuple[RecordRef, Any]]:
    """`read_examples(path, **read_kwargs)`, each record paired with its `RecordRef`."""
    path = Path(path)
    for index, record in enumerate(read_examples(path, **read_kwargs)):
        yield RecordRef(path, index), record


def locate_record(paths: Sequence[str | os.PathLike], position: int) -> RecordRef:
    """The record at `position` of `paths` read one after another (the order of a `FrameCache`)."""
    rest = position
    for path in paths:
        count = len(tfrecord_index(path, verify_crc=False))
        if rest < count:
            return RecordRef(Path(path), rest)
        rest -= count
    raise IndexError(f"record {position} is past the end of {len(paths)} file(s)")


def decode_text(value: Any, field: str, ref: RecordRef | None, *, video_id: str | None = None) -> str:
    """The first element of a bytes feature as UTF-8 text ("" when absent or empty).

    Raises:
        RecordError: a feature that is not bytes (e.g. int64), or bytes that are not UTF-8 (naming the
            field, the video and where the record is).
    """
    if value is None or (isinstance(value, (list, tuple)) and not value):
        return ""
    who = f"video {video_id}: " if video_id else ""
    if not isinstance(value, (list, tuple)) or not isinstance(value[0], (bytes, bytearray, memoryview)):
        kind = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
        raise record_error(f"{who}{field!r} is a {kind} feature, expected bytes", ref)
    try:
        return bytes(value[0]).decode("utf-8")
    except UnicodeDecodeError as e:
        raise record_error(f"{who}{field!r} is not UTF-8 ({e.reason} at byte {e.start})", ref) from None


def check_nonfinite_choice(nonfinite: str) -> None:
    """Raise ValueError naming the valid choices unless `nonfinite` is one of `NONFINITE_CHOICES`."""
    if nonfinite not in NONFINITE_CHOICES:
        raise ValueError(f"unknown nonfinite {nonfinite!r}; valid choices: {', '.join(NONFINITE_CHOICES)}")


def nonfinite_rows(frames: np.ndarray) -> np.ndarray:
    """(L,) bool: the frames of an (L, D) float array that hold inf or NaN (fp16 read bitwise, no copy)."""
    if frames.dtype.kind != "f":
        return np.zeros(len(frames), bool)
    if frames.dtype.itemsize == 2:
        bits = frames.view(np.uint16)
        return ((bits & _FP16_EXPONENT) == _FP16_EXPONENT).any(axis=-1)
    return ~np.isfinite(frames).all(axis=-1)


def _nonfinite_error(
    video_ids: Sequence[str], key: str, ref: RecordRef | None, detail: str
) -> NonFiniteFeatureError:
    reason = f"video {video_ids[0]}: {key!r} holds non-finite values ({detail})"
    if len(video_ids) > 1:
        others = ", ".join(video_ids[1:6]) + (" ..." if len(video_ids) > 6 else "")
        reason += f" (and {len(video_ids) - 1} more video(s): {others})"
    reason += "; pass nonfinite='drop' or 'zero' (data_options) to drop such videos or set the values to 0"
    if ref is None:
        return NonFiniteFeatureError(reason, video_ids=video_ids)
    return NonFiniteFeatureError(reason, ref.path, ref.offset(), video_ids)


def _describe(frames: np.ndarray, bad_rows: np.ndarray) -> str:
    values = np.asarray(frames[bad_rows], np.float32)
    kinds = [name for name, hit in (("+inf", np.isposinf(values).any()), ("-inf", np.isneginf(values).any()),
                                    ("NaN", np.isnan(values).any())) if hit]  # fmt: skip
    rows = np.flatnonzero(bad_rows)
    return f"{' '.join(kinds)} in frame(s) {', '.join(map(str, rows[:5]))}{' ...' if len(rows) > 5 else ''}"


def finite_frames(
    frames: np.ndarray, nonfinite: str, video_id: str, ref: RecordRef | None, *, key: str = "frame_feature"
) -> np.ndarray | None:
    """Apply the non-finite policy to one video's (L, D) float frames.

    Returns:
        `frames` itself when all values are finite; with `zero`, a copy with inf/NaN set to 0; with
        `drop`, None (leave the video out).

    Raises:
        NonFiniteFeatureError: with `error` (naming the video, the frames and where the record is).
    """
    bad = nonfinite_rows(frames)
    if not bad.any():
        return frames
    if nonfinite == "drop":
        return None
    if nonfinite == "zero":
        return np.where(np.isfinite(frames), frames, np.zeros((), frames.dtype))
    check_nonfinite_choice(nonfinite)
    raise _nonfinite_error([video_id], key, ref, _describe(frames, bad))


def nonfinite_records(cache: FrameCache) -> np.ndarray:
    """Positions of the records of a `FrameCache` whose frames hold inf or NaN, (n,) int64 ascending.

    The scan reads every frame once; its result is kept in the cache folder (a rebuilt cache replaces
    the folder, and the result with it), so opening the cache again costs nothing.
    """
    memo = Path(cache.cache_dir) / _NONFINITE_FILE
    frames_total = int(cache.num_frames.sum())
    try:
        saved = json.loads(memo.read_text())
        if saved.get("num_records") == len(cache) and saved.get("num_frames") == frames_total:
            return np.asarray(saved["records"], np.int64)
    except (OSError, ValueError, AttributeError):
        pass
    bad = [i for i in range(len(cache)) if nonfinite_rows(cache.frames(i)).any()]
    try:
        tmp = memo.with_name(f".{memo.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"num_records": len(cache), "num_frames": frames_total, "records": bad}))
        os.replace(tmp, memo)
    except OSError:  # a read-only cache: scan again next time
        pass
    return np.asarray(bad, np.int64)


def cache_nonfinite_error(
    cache: FrameCache,
    positions: np.ndarray,
    paths: Sequence[str | os.PathLike],
    video_ids: Sequence[str],
    key: str,
) -> NonFiniteFeatureError:
    """The `error` policy's exception for the records of a cache at `positions` (located in `paths`)."""
    first = int(positions[0])
    frames = cache.frames(first)
    return _nonfinite_error(
        list(video_ids), key, locate_record(paths, first), _describe(frames, nonfinite_rows(frames))
    )
