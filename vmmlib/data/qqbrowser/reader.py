"""QQ Browser 2021 (CIKM AnalytiCup) video-similarity data, in its exact on-disk layout (SPEC §1.1).

    data_dir/
      pointwise/pretrain_{0..19}.tfrecords   tf.train.Example per video (pretraining, with tags)
      pairwise/pairwise.tfrecords            every video that appears in a labelled pair
      pairwise/label.tsv                     query_id \\t candidate_id \\t relevance
      test_a/test_a.tfrecords, test_b/test_b.tfrecords
      tag_list.txt                           supervised tag ids, one integer per line
      chinese_L-12_H-768_A-12/vocab.txt      BERT vocabulary (or pass `vocab_path`)

Video records: `id`, `title`, `asr_text` (UTF-8 bytes), `tag_id` (int64 list), `category_id`
(int64), `frame_feature` (one bytes element per frame: 1536 little-endian float16).

Readers check every record: a record without an id, text that is not UTF-8 or frames of the wrong
size raise `vmmlib.io.RecordError` naming the file and the record's byte offset. fp16 frames can
hold inf/NaN; `nonfinite` (`vmmlib.data.record_checks.NONFINITE_CHOICES`) says what happens to such
a video: `error` (default: an error naming the file and the video ids), `drop` or `zero`.

`load` opens a data folder for training (`QQData`: tokenizer, tag vocabulary, pairs, one
`VideoDataset` per split, frames cached on disk).
"""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from vmmlib.data.frames import FRAME_MODES, sample_frames
from vmmlib.data.record_checks import (
    RecordRef,
    cache_nonfinite_error,
    check_nonfinite_choice,
    decode_text,
    finite_frames,
    locate_record,
    nonfinite_records,
    read_with_refs,
    record_error,
)
from vmmlib.data.tokenize import encode_texts, tokenizer_for
from vmmlib.io import FrameCache, RecordError, cache_dir_for
from vmmlib.io.label_tsv import read_label_tsv
from vmmlib.io.safe import InputError, iter_lines
from vmmlib.options import check_choice

FEATURE_DIM = 1536
MAX_FRAMES = 32
SPLITS = ("pointwise", "pairwise", "test_a", "test_b")
TEXT_FIELDS = ("title", "asr_text", "title+asr_text")
SCHEMA = {
    "id": "bytes",
    "title": "bytes",
    "asr_text": "bytes",
    "tag_id": "int64",
    "category_id": "int64",
    "frame_feature": "bytes",
}
META_KEYS = ("title", "asr_text", "tag_id", "category_id")
RAW_DTYPES = {"frame_feature": ("<f2", FEATURE_DIM)}  # frames decoded straight into an (L, 1536) array
_SPLIT_GLOBS = {
    "pointwise": "pointwise/pretrain_*.tfrecords",
    "pairwise": "pairwise/pairwise.tfrecords",
    "test_a": "test_a/test_a*.tfrecords",
    "test_b": "test_b/test_b*.tfrecords",
}


def _shard_number(path: str) -> tuple[int, str]:
    stem = Path(path).stem
    digits = "".join(c for c in stem.rsplit("_", 1)[-1] if c.isdigit())
    return (int(digits) if digits else -1, stem)


def split_files(data_dir: str | Path, split: str) -> list[Path]:
    """The record files of one split, in shard order (`pretrain_2` before `pretrain_10`)."""
    if split not in _SPLIT_GLOBS:
        raise ValueError(f"unknown split {split!r}; valid choices: {', '.join(SPLITS)}")
    files = sorted(glob.glob(str(Path(data_dir) / _SPLIT_GLOBS[split])), key=_shard_number)
    return [Path(f) for f in files]


def check_layout(data_dir: str | Path) -> dict[str, list[Path]]:
    """Check `data_dir` holds the QQ Browser layout; return the files of every split present.

    Raises:
        InputError: naming what is missing and the layout expected.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(root, f"data_dir does not exist (make a sample with `vmm sample qqbrowser {root}`)")
    files = {split: split_files(root, split) for split in SPLITS}
    missing = [_SPLIT_GLOBS[s] for s in ("pointwise", "pairwise") if not files[s]]
    missing += [name for name in ("pairwise/label.tsv", "tag_list.txt") if not (root / name).is_file()]
    if missing:
        raise InputError(root, f"not in the QQ Browser layout: missing {', '.join(missing)}")
    return {split: paths for split, paths in files.items() if paths}


def default_vocab(data_dir: str | Path) -> Path:
    return Path(data_dir) / "chinese_L-12_H-768_A-12" / "vocab.txt"


class TagVocab:
    """The supervised tags of `tag_list.txt`: tag id → column of the multi-hot vector."""

    def __init__(self, tag_ids: Sequence[int]):
        self.tag_ids = np.asarray(tag_ids, dtype=np.int64)  # (num_tags,), in file order
        self._column = {int(t): i for i, t in enumerate(self.tag_ids)}
        if len(self._column) != len(self.tag_ids):
            raise ValueError("duplicate tag ids in the tag list")

    @classmethod
    def read(cls, path: str | Path) -> TagVocab:
        """`tag_list.txt`: one integer tag id per line; InputError naming file and line otherwise."""
        tags, seen = [], {}
        for number, line in iter_lines(path, what="tag list"):
            for token in line.split():
                if not token.lstrip("-").isdigit() or len(token) > 18:
                    raise InputError(path, f"tag id {token[:40]!r} is not an integer", f"line {number}")
                if int(token) in seen:
                    raise InputError(
                        path, f"tag id {token} repeated (first on line {seen[int(token)]})", f"line {number}"
                    )
                seen[int(token)] = number
                tags.append(int(token))
        return cls(tags)

    def __len__(self) -> int:
        return len(self.tag_ids)

    def __contains__(self, tag_id: int) -> bool:
        return int(tag_id) in self._column

    def multi_hot(self, tag_ids: Sequence[int]) -> np.ndarray:
        """(num_tags,) float32; tags outside `tag_list.txt` are dropped, as the baseline does."""
        out = np.zeros(len(self.tag_ids), np.float32)
        out[[self._column[t] for t in map(int, tag_ids) if t in self._column]] = 1.0
        return out


def parse_video(record: dict, *, ref: RecordRef | None = None) -> dict:
    """A decoded Example → id, title, asr_text, tag_id, category_id (−1 if absent), frames (L, 1536) fp16.

    `frame_feature` may already be an (L, 1536) array (decoded with `RAW_DTYPES`, one copy, sizes
    checked by the reader) or the list of per-frame bytes elements. Frames are returned as stored
    (see `read_videos` for the non-finite check).

    Args:
        ref: where the record lives, named by the errors.

    Raises:
        RecordError: no id (or an empty one), id or text not UTF-8, frame elements of the wrong size.
    """
    vid = decode_text(record.get("id"), "id", ref)
    if not vid:
        raise record_error("record has no id (its 'id' feature is missing or empty)", ref)
    frames = record.get("frame_feature", [])
    if not isinstance(frames, np.ndarray):
        bad = [len(c) for c in frames if len(c) != 2 * FEATURE_DIM]
        if bad:
            raise record_error(
                f"video {vid}: frame_feature elements of {bad[0]} bytes, expected {2 * FEATURE_DIM}", ref
            )
        frames = np.frombuffer(b"".join(frames), dtype="<f2").reshape(-1, FEATURE_DIM)
    category = record.get("category_id")
    for key, value in (("tag_id", record.get("tag_id")), ("category_id", category)):
        empty = isinstance(value, (list, tuple)) and not value  # absent from every record: no type
        if (
            value is not None
            and not empty
            and not (isinstance(value, np.ndarray) and value.dtype.kind in "iu")
        ):
            kind = value.dtype if isinstance(value, np.ndarray) else "bytes"
            raise record_error(f"video {vid}: {key!r} is a {kind} feature, expected int64", ref)
    return {
        "id": vid,
        "title": decode_text(record.get("title"), "title", ref, video_id=vid),
        "asr_text": decode_text(record.get("asr_text"), "asr_text", ref, video_id=vid),
        "tag_id": record.get("tag_id", np.zeros(0, np.int64)),
        "category_id": int(category[0]) if category is not None and len(category) else -1,
        "frames": frames,
    }


def read_videos(paths: Sequence[str | Path], *, nonfinite: str = "error") -> Iterator[dict]:
    """Stream parsed videos (see `parse_video`) from record files, in order.

    Args:
        nonfinite: a video whose frames hold inf/NaN: `error` (a `NonFiniteFeatureError` naming the
            file, the byte offset and the video), `drop` (skip it) or `zero` (set those values to 0).
    """
    check_nonfinite_choice(nonfinite)
    for path in paths:
        for ref, record in read_with_refs(path, keys=list(SCHEMA), schema=SCHEMA, raw_dtypes=RAW_DTYPES):
            video = parse_video(record, ref=ref)
            video["frames"] = finite_frames(video["frames"], nonfinite, video["id"], ref)
            if video["frames"] is not None:
                yield video


def read_pairs(path: str | Path) -> pd.DataFrame:
    """`label.tsv` → DataFrame(query, candidate, relevance), split on whitespace like the official
    reader (`vmmlib.io.label_tsv.read_label_tsv`: every error names the file and line). An empty file
    means no labelled pairs (a folder of unlabelled videos, as `vmm extract` writes one)."""
    return pd.DataFrame(read_label_tsv(path, allow_empty=True), columns=["query", "candidate", "relevance"])


class VideoStore:
    """One split's videos with random access, frames memory-mapped from an on-disk cache.

    The cache is written on first use (`FrameCache.for_tfrecords`) and reused while the record
    files are unchanged; later epochs gather frames from the page cache instead of re-decoding.
    Items are `parse_video` dicts; `meta(i)` gives the same without the frames. Opening checks every
    record's id and scans the frames for inf/NaN once per cache build (see `read_videos` for
    `nonfinite`); `dropped` holds the ids left out by `nonfinite="drop"`.
    """

    def __init__(self, paths: Sequence[str | Path], cache_dir: str | Path, *, nonfinite: str = "error"):
        check_nonfinite_choice(nonfinite)
        self.paths = [Path(p) for p in paths]
        self.cache = FrameCache.for_tfrecords(
            self.paths, cache_dir, frame_key="frame_feature", frame_dim=FEATURE_DIM, meta_keys=META_KEYS
        )
        if self.cache.manifest["columns"][0]["kind"] != "bytes" and len(self.cache):
            kind = self.cache.manifest["columns"][0]["kind"]
            raise locate_record(self.paths, 0).error(f"'id' is a {kind} feature, expected bytes")
        if not len(self.cache):
            raise InputError(
                self.paths[0] if self.paths else None, "the split's record files hold no records"
            )
        all_ids = [self._checked_id(pos, raw) for pos, raw in enumerate(self.cache.ids)]
        bad = nonfinite_records(self.cache)
        if len(bad) and nonfinite == "error":
            raise cache_nonfinite_error(
                self.cache, bad, self.paths, [all_ids[b] for b in bad], "frame_feature"
            )
        self._zeroed = set(bad.tolist()) if nonfinite == "zero" else set()
        keep = np.setdiff1d(np.arange(len(all_ids)), bad) if nonfinite == "drop" else np.arange(len(all_ids))
        self.dropped = {all_ids[b] for b in bad} if nonfinite == "drop" else set()
        self._rows = keep.astype(np.int64)
        self.ids = [all_ids[r] for r in self._rows]

    def _checked_id(self, position: int, raw: bytes) -> str:
        try:
            vid = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise locate_record(self.paths, position).error(f"'id' is not UTF-8 ({e.reason})") from None
        if not vid:
            raise locate_record(self.paths, position).error(
                "record has no id (its 'id' feature is missing or empty)"
            )
        return vid

    def __len__(self) -> int:
        return len(self._rows)

    def meta(self, i: int) -> dict:
        row = int(self._rows[i])
        try:
            return parse_video(self.cache.meta(row))
        except RecordError as e:  # the cache has no locations: find the record in its file
            if e.path is not None:
                raise
            raise locate_record(self.paths, row).error(e.reason) from None

    def frames(self, i: int) -> np.ndarray:
        """Video i's frames, (L, 1536) float16 (read-only view, or a zeroed copy with `nonfinite="zero"`)."""
        row = int(self._rows[i])
        frames = self.cache.frames(row)
        return finite_frames(frames, "zero", self.ids[i], None) if row in self._zeroed else frames

    def __getitem__(self, i: int) -> dict:
        video = self.meta(i)
        video["frames"] = self.frames(i)
        return video


class VideoDataset(Dataset):
    """Map-style dataset of one split's videos → the shared batch keys.

    Items: `frames` (T, 1536) float32, `frame_mask` (T,) float32, `text_ids`/`text_mask` (L,) int64,
    `labels` (num_tags,) float32 tag multi-hot (zeros when the split has no tags), `id` str.
    Texts are tokenised once up front; frames are read from `videos` (a sequence of parsed videos,
    e.g. a `VideoStore`) on access.

    Args:
        text_field: `title` (the baseline), `asr_text`, or `title+asr_text` (joined with [SEP]).
        frame_mode: see `vmmlib.data.frames.sample_frames`.
    """

    def __init__(
        self,
        videos,
        tokenizer,
        tags: TagVocab,
        *,
        max_frames: int = MAX_FRAMES,
        frame_mode: str = "zero_pad",
        text_field: str = "title",
        max_text_len: int = 32,
    ):
        check_choice("text_field", text_field, TEXT_FIELDS)
        check_choice("frame_mode", frame_mode, FRAME_MODES)
        self.videos, self.tags = videos, tags
        self.max_frames, self.frame_mode = max_frames, frame_mode
        meta = [videos.meta(i) if hasattr(videos, "meta") else videos[i] for i in range(len(videos))]
        self.ids = [m["id"] for m in meta]
        self._row = {vid: i for i, vid in enumerate(self.ids)}
        sep = f" {tokenizer.sep_token} "
        texts = [sep.join(m[f] for f in text_field.split("+")) for m in meta]
        self.text_ids, self.text_mask = encode_texts(tokenizer, texts, max_text_len)
        self._tag_ids = [m["tag_id"] for m in meta]

    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self, video_id: str) -> int:
        try:
            return self._row[video_id]
        except KeyError:
            if video_id in getattr(self.videos, "dropped", ()):
                raise KeyError(
                    f"video {video_id} was dropped for non-finite frame features (nonfinite='drop'); "
                    "use nonfinite='zero' to keep it"
                ) from None
            raise KeyError(f"video {video_id} is not in this split") from None

    def __getitem__(self, i: int) -> dict:
        frames, mask = sample_frames(self.videos[i]["frames"], self.max_frames, self.frame_mode)
        return {
            "frames": frames,
            "frame_mask": mask,
            "text_ids": self.text_ids[i],
            "text_mask": self.text_mask[i],
            "labels": self.tags.multi_hot(self._tag_ids[i]),
            "id": self.ids[i],
        }


class PairDataset(Dataset):
    """Labelled pairs over a `VideoDataset`: items `{"a": video item, "b": video item, "sim": float32}`."""

    def __init__(self, videos: VideoDataset, pairs: pd.DataFrame, indices: Sequence[int] | None = None):
        pairs = pairs if indices is None else pairs.iloc[np.asarray(indices)]
        self.videos = videos
        self.a = np.array([videos.index_of(v) for v in pairs["query"]], dtype=np.int64)
        self.b = np.array([videos.index_of(v) for v in pairs["candidate"]], dtype=np.int64)
        self.sim = pairs["relevance"].to_numpy(np.float32)

    def __len__(self) -> int:
        return len(self.sim)

    def __getitem__(self, i: int) -> dict:
        return {"a": self.videos[self.a[i]], "b": self.videos[self.b[i]], "sim": self.sim[i]}


# --- the data folder opened for training -------------------------------------------------------------


@dataclass
class QQData:
    """A QQ Browser data folder opened for training: tokenizer, tag vocabulary, splits and pairs.

    Attributes:
        options: the `VideoDataset` options (max_frames, frame_mode, text_field, max_text_len).
        nonfinite: what a split does with a video whose frames hold inf/NaN (see `read_videos`).
    """

    data_dir: Path
    tokenizer: object
    tags: TagVocab
    pairs: pd.DataFrame
    options: dict = field(default_factory=dict)
    nonfinite: str = "error"
    _splits: dict = field(default_factory=dict)

    def split(self, name: str) -> VideoDataset:
        """The `VideoDataset` of a split (frames cached on disk on first use)."""
        if name not in self._splits:
            files = split_files(self.data_dir, name)
            if not files:
                raise FileNotFoundError(f"{self.data_dir} has no {name} records")
            store = VideoStore(files, cache_dir_for(self.data_dir) / name, nonfinite=self.nonfinite)
            self._splits[name] = VideoDataset(store, self.tokenizer, self.tags, **self.options)
        return self._splits[name]

    def model_overrides(self, text_model_dir: str = "") -> dict:
        """What a model must match in this data: tag count and vocabulary size (that of the tokenizer,
        which a `text_model_dir` brings)."""
        return {"num_tags": len(self.tags), "vocab_size": len(self.tokenizer)}


def load(
    data_dir: str | Path,
    *,
    text_model_dir: str | Path = "",
    vocab_path: str | Path | None = None,
    max_frames: int = MAX_FRAMES,
    frame_mode: str = "zero_pad",
    text_field: str = "title",
    max_text_len: int = 32,
    nonfinite: str = "error",
) -> QQData:
    """Open a QQ Browser data folder (the notebooks' `data_options` are these keyword arguments).

    Args:
        text_model_dir: a local Hugging Face text model; texts are tokenised with the tokenizer saved
            there (as seed 000 does with `--bert-dir`), else with `vocab_path`.
        vocab_path: the BERT vocabulary used when the text model brings no tokenizer (default: the
            folder's `chinese_L-12_H-768_A-12/vocab.txt`).
        max_frames, frame_mode, text_field, max_text_len: see `VideoDataset`.
        nonfinite: a video whose frames hold inf/NaN: `error` (default; names the file and the video
            ids), `drop` (left out of its split: not for videos in labelled pairs or a test split,
            which must keep every video) or `zero` (those values set to 0).
    """
    data_dir = Path(data_dir)
    check_layout(data_dir)
    check_choice("frame_mode", frame_mode, FRAME_MODES)
    check_choice("text_field", text_field, TEXT_FIELDS)
    check_nonfinite_choice(nonfinite)
    return QQData(
        data_dir=data_dir,
        tokenizer=tokenizer_for(text_model_dir, vocab_path or default_vocab(data_dir)),
        tags=TagVocab.read(data_dir / "tag_list.txt"),
        pairs=read_pairs(data_dir / "pairwise" / "label.tsv"),
        options={
            "max_frames": max_frames,
            "frame_mode": frame_mode,
            "text_field": text_field,
            "max_text_len": max_text_len,
        },
        nonfinite=nonfinite,
    )
