"""The output side of `vmm extract`: the PCA projection and the writers of the three feature formats.

`vmmlib.extract.run` turns videos into per-second backbone features; this module projects them to the
dimension a format fixes and writes them in its exact on-disk layout, so the format's reader (and
every workflow above it) takes them unchanged:

| format | split files written | per second |
|---|---|---|
| `qqbrowser` (SPEC §1.1) | `pointwise/pretrain_{k}.tfrecords`, else `{split}/{split}.tfrecords`: Examples `id`, `title`, `asr_text`, `frame_feature` (+ `tag_id`, `category_id` when given) | fp16 × 1536 |
| `wbdc` (SPEC §1.2) | `annotations/{split}.json`, `zip_feats/{split}.zip` of `{id}.npy` | fp16 × 768 |
| `yt8m` (SPEC §1.4) | `frame/{split}/{split}{kkkk}.tfrecord` SequenceExamples (+ `video/{split}/` Examples of the means) | uint8 rgb × 1024 + audio × 128 |

Projection, as the official YouTube-8M extractor (google/youtube-8m `feature_extractor.py`): PCA fitted
on the extracted set, `y = (x − mean) · V / sqrt(λ + 1e-4)` (whitened) for YouTube-8M, then quantised
to 8 bits over [−2, 2]; QQ Browser and WBDC keep the features unwhitened (a rotation: distances are
kept) and are only projected when the backbone's dimension differs from the format's. Components the
data cannot supply are written as zeros: past the backbone's own dimension, and past the rank of the
fitted frames (N frames span at most N − 1 directions; a component of eigenvalue ≤ 1e-10 · the
largest is zeroed). The fitted projection is saved next to the data (`extract/pca_frames.npz`,
`extract/pca_audio.npz`) and reused by later calls, so later videos are projected the same way.

The split may be added to an existing data folder: numbered shards (QQ `pointwise`, YouTube-8M) then
start after the folder's own (`test0002.tfrecord` after the competition's `test0000`-`test0001`);
a fixed-name file that vmm extract did not write is never replaced without `overwrite`. Files
missing from a fresh folder that a reader's layout check needs are created empty (QQ Browser:
`tag_list.txt` from the given tags, an empty `pairwise/label.tsv` and empty record files; WBDC: an
empty `annotations/labeled.json`) along with a BERT vocabulary. YouTube-8M's `segment_label_ids.csv`
and validate shards are the competition's: add the extracted split to a folder that has them.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vmmlib.data.yt8m.reader import RGB_DIM, dequantize, quantize
from vmmlib.io import (
    BytesList,
    FloatList,
    Int64List,
    TFRecordWriter,
    encode_example,
    encode_sequence_example,
    safe,
)
from vmmlib.io.safe_npz import load_npz

WHITEN_EPS = 1e-4  # the official extractor's sqrt(eigenvalue + 1e-4)
RANK_TOL = 1e-10  # an eigenvalue below this fraction of the largest is no direction of the data
_FP16_MAX = float(np.finfo(np.float16).max)
_FP32_MAX = float(np.finfo(np.float32).max)
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: the same input gives the same bytes


@dataclass(frozen=True)
class FormatSpec:
    """What a target format fixes."""

    name: str
    frame_dim: int  # stored dimension of a frame feature
    splits: tuple[str, ...]  # where extracted videos can go
    default_split: str
    whiten: bool  # whitened PCA always (YouTube-8M), or a plain rotation only when the dims differ
    audio: bool  # a per-second audio stream is stored


FORMATS = {
    "qqbrowser": FormatSpec("qqbrowser", 1536, ("test_a", "test_b", "pointwise", "pairwise"), "test_a", False, False),
    "wbdc": FormatSpec("wbdc", 768, ("test_a", "test_b", "test", "unlabeled", "labeled"), "test_a", False, False),
    "yt8m": FormatSpec("yt8m", RGB_DIM, ("test", "validate", "train"), "test", True, True),
}  # fmt: skip


def format_spec(name: str, split: str | None = None) -> tuple[FormatSpec, str]:
    """The spec of format `name` and the split (default: the format's test split), both checked."""
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r}; valid choices: {', '.join(FORMATS)}")
    spec = FORMATS[name]
    split = split or spec.default_split
    if split not in spec.splits:
        raise ValueError(f"unknown {name} split {split!r}; valid choices: {', '.join(spec.splits)}")
    return spec, split


# ------------------------------------------------------------------------------------------ projection


class CovarianceAccumulator:
    """Streaming mean and covariance of rows (float64, shifted by the first rows for stability)."""

    def __init__(self, dim: int):
        self.dim, self.count = dim, 0
        self.shift: np.ndarray | None = None
        self._sum = np.zeros(dim)
        self._outer = np.zeros((dim, dim))

    def update(self, rows: np.ndarray) -> None:
        """Add rows, (N, dim)."""
        x = np.asarray(rows, np.float64).reshape(-1, self.dim)
        if not len(x):
            return
        if self.shift is None:
            self.shift = x.mean(0)
        x = x - self.shift
        self.count += len(x)
        self._sum += x.sum(0)
        self._outer += x.T @ x

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean (dim,), covariance (dim, dim)) with the N − 1 denominator."""
        if self.count < 2:
            raise ValueError(f"a PCA needs at least 2 frames, got {self.count}")
        centred_mean = self._sum / self.count
        cov = (self._outer - self.count * np.outer(centred_mean, centred_mean)) / (self.count - 1)
        return centred_mean + self.shift, (cov + cov.T) / 2


@dataclass
class Projection:
    """A fitted PCA: `apply(x) = (x − mean) · components / scale`, float32.

    Attributes:
        mean: (D,) input mean.
        components: (D, K) principal directions in columns, by decreasing eigenvalue; zero columns
            for the components the data cannot supply (see the module docstring).
        eigenvalues: (K,) their variances (0 for zero columns).
        whiten: divide by sqrt(eigenvalue + 1e-4), as the official YouTube-8M extractor.
        frames, videos: how many rows and videos it was fitted on.
        backbone: the fingerprint of the backbone whose features it takes.
    """

    mean: np.ndarray
    components: np.ndarray
    eigenvalues: np.ndarray
    whiten: bool
    frames: int
    videos: int
    backbone: str

    @property
    def input_dim(self) -> int:
        return self.components.shape[0]

    @property
    def output_dim(self) -> int:
        return self.components.shape[1]

    @classmethod
    def fit(cls, acc: CovarianceAccumulator, output_dim: int, *, whiten: bool, videos: int, backbone: str):
        """PCA of the rows accumulated in `acc`, to `output_dim` components."""
        mean, cov = acc.mean_cov()
        values, vectors = np.linalg.eigh(cov)  # ascending
        values, vectors = values[::-1].clip(min=0.0), vectors[:, ::-1]
        keep = min(output_dim, acc.dim, acc.count - 1)
        supplied = np.arange(acc.dim) < keep
        supplied &= values > RANK_TOL * max(values[0], np.finfo(float).tiny)
        signs = np.sign(vectors[np.abs(vectors).argmax(0), np.arange(acc.dim)])  # largest entry > 0
        vectors = vectors * np.where(signs == 0, 1.0, signs)
        components = np.zeros((acc.dim, output_dim))
        eigenvalues = np.zeros(output_dim)
        n = min(output_dim, acc.dim)
        components[:, :n] = vectors[:, :n] * supplied[:n]
        eigenvalues[:n] = values[:n] * supplied[:n]
        return cls(mean, components, eigenvalues, whiten, acc.count, videos, backbone)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """(N, D) → (N, K) float32."""
        if x.shape[-1] != self.input_dim:
            raise ValueError(f"projection takes {self.input_dim}-d features, got {x.shape[-1]}-d")
        y = (np.asarray(x, np.float64) - self.mean) @ self.components
        if self.whiten:
            y = y / np.sqrt(self.eigenvalues + WHITEN_EPS)
        return y.astype(np.float32)

    def save(self, path: str | Path) -> None:
        fields = {k: getattr(self, k) for k in ("mean", "components", "eigenvalues")}
        meta = {
            "whiten": self.whiten,
            "frames": self.frames,
            "videos": self.videos,
            "backbone": self.backbone,
        }
        atomic_write(Path(path), lambda f: np.savez(f, **fields, meta=np.array(json.dumps(meta))))

    @classmethod
    def load(cls, path: str | Path) -> Projection:
        """A saved projection (`--pca` may name one from elsewhere): read through `vmmlib.io.safe`."""
        z = load_npz(path)
        try:
            meta = safe.parse_json(str(z["meta"]), path, where="member 'meta.npy'")
            return cls(z["mean"], z["components"], z["eigenvalues"], **meta)
        except (KeyError, TypeError, ValueError) as e:
            raise safe.InputError(path, f"not a saved projection ({type(e).__name__}: {e})") from None


def atomic_write(path: Path, write) -> None:
    """`write(file)` into a temporary sibling, then renamed over `path` (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------------------ texts


class Texts(dict):
    """{video id: fields} as `read_texts` read them, remembering the file and each entry's place
    (`where[id]`: "line 3", "entry 2") so later checks name them."""

    def __init__(self, rows: dict, path: Path | None = None, where: dict[str, str] | None = None):
        super().__init__(rows)
        self.path, self.where = path, where or {}


def read_texts(path: str | Path) -> Texts:
    """Per-video texts and labels: {video id: fields}. The id is the video file's name without suffix.

    Accepted files: `.json` (an array of objects with `id`, e.g. a WBDC annotation file, or an object
    {id: fields}), `.jsonl` (one object with `id` per line), `.tsv`/`.csv` (a header naming `id` and
    the fields). Fields a format stores: `title`, `asr_text` (or `asr`), `ocr` (WBDC), `tag_id`,
    `category_id` (QQ Browser, WBDC), `labels`, `segment_start_times`, `segment_labels`,
    `segment_scores` (YouTube-8M). Read through `vmmlib.io.safe`: every error (invalid UTF-8 or JSON,
    nesting too deep, a row of the wrong width, an entry without `id`, an id given twice) is an
    `InputError` naming the file and the line or entry.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        rows = [(f"line {n}", row) for n, row in safe.iter_jsonl(path, what="texts file")]
    elif suffix == ".json":
        data = safe.read_json(path, what="texts file")
        if isinstance(data, dict):
            rows = [(f"entry {k!r}", {"id": k, **v} if isinstance(v, dict) else v) for k, v in data.items()]
        elif isinstance(data, list):
            rows = [(f"entry {n}", row) for n, row in enumerate(data)]
        else:
            raise safe.InputError(path, "a texts .json file is an array of objects or an object {id: fields}")
    elif suffix in (".tsv", ".csv"):
        rows = _table_rows(path, "\t" if suffix == ".tsv" else ",")
    else:
        raise safe.InputError(
            path, f"unknown texts file type {suffix!r}; valid choices: .json, .jsonl, .tsv, .csv"
        )
    out, where = {}, {}
    for place, row in rows:
        if not isinstance(row, dict) or not str(row.get("id", "")):
            raise safe.InputError(path, "entry has no 'id' (an object with an 'id' field is expected)", place)
        fields = dict(row)
        if "asr" in fields and "asr_text" not in fields:
            fields["asr_text"] = fields["asr"]
        vid = str(fields.pop("id"))
        if vid in out:
            raise safe.InputError(path, f"video id {vid!r} given twice (first at {where[vid]})", place)
        out[vid], where[vid] = fields, place
    if not out:
        raise safe.InputError(path, "texts file holds no entries")
    return Texts(out, path, where)


def _table_rows(path: Path, delimiter: str) -> list[tuple[str, dict]]:
    rows, header = [], None
    for n, fields in safe.iter_csv_rows(path, delimiter=delimiter, what="texts file"):
        if header is None:
            header = fields
            continue
        if len(fields) != len(header):
            raise safe.InputError(
                path, f"{len(fields)} fields where the header names {len(header)}", f"line {n}"
            )
        rows.append((f"line {n}", dict(zip(header, fields))))
    return rows


def _float_list(value) -> np.ndarray:
    """Finite float32 values from a JSON list, one number, or a string of numbers."""
    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split() if v]
    elif not isinstance(value, (list, tuple)):
        value = [value]
    if any(isinstance(v, bool) or not isinstance(v, (int, float, str)) for v in value):
        raise ValueError(f"not numbers: {value!r}"[:200])
    values = np.asarray([float(v) for v in value], np.float64)
    if not np.isfinite(values).all() or (np.abs(values) > _FP32_MAX).any():
        raise ValueError(
            f"{values[~np.isfinite(values) | (np.abs(values) > _FP32_MAX)][0]} is not a finite float32"
        )
    return values.astype(np.float32)


def _int_list(value) -> np.ndarray:
    """A list of ints from a JSON list, one int, or a string of ints split on spaces or commas."""
    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split() if v]
    elif not isinstance(value, (list, tuple, np.ndarray)):
        value = [value]
    return np.asarray([int(v) for v in value], np.int64)


def check_texts(format: str, texts: dict[str, dict]) -> None:
    """Refuse, before any video is decoded, labels the format's readers would reject.

    Raises:
        InputError: naming the texts file and line (when `texts` came from `read_texts`), the video
            id, the field and the valid values; segment scores must be finite float32 numbers.
    """
    from vmmlib.data.yt8m.reader import NUM_CLASSES
    from vmmlib.io.wbdc_categories import CATEGORY_IDS

    for vid, f in texts.items():
        try:
            for key in ("tag_id", "labels", "segment_start_times", "segment_labels"):
                if f.get(key) not in (None, ""):
                    _int_list(f[key])
            if f.get("segment_scores") not in (None, ""):
                _float_list(f["segment_scores"])
            if format == "qqbrowser" and f.get("category_id") not in (None, ""):
                int(f["category_id"])
            if format == "wbdc" and f.get("category_id") not in (None, "", *CATEGORY_IDS):
                raise ValueError(
                    f"category_id {f['category_id']!r} is none of the 200 WBDC categories (e.g. '0100')"
                )
            if format == "yt8m":
                classes = np.concatenate([_int_list(f.get(k) or []) for k in ("labels", "segment_labels")])
                if ((classes < 0) | (classes >= NUM_CLASSES)).any():
                    raise ValueError(f"class ids must be in [0, {NUM_CLASSES})")
                lengths = {
                    k: len(_int_list(f.get(k) or [])) for k in ("segment_start_times", "segment_labels")
                }
                lengths["segment_scores"] = len(_float_list(f.get("segment_scores") or []))
                if len(set(lengths.values())) > 1:
                    raise ValueError(f"segment lists of different lengths {lengths}")
        except (ValueError, TypeError, OverflowError) as e:
            where = getattr(texts, "where", {}).get(vid)
            raise safe.InputError(getattr(texts, "path", None), f"texts of video {vid}: {e}", where) from None


# ------------------------------------------------------------------------------------------ writers


@dataclass
class VideoFeatures:
    """One extracted video, projected: what a writer stores."""

    id: str
    frames: np.ndarray  # (T, frame_dim) float32, one row per sampled second
    audio: np.ndarray | None  # (T, 128) float32 projected audio (YouTube-8M), zero where there is none
    fields: dict  # texts and labels from `read_texts` ({} when none)


def _shard_patterns(format: str, split: str) -> list[str] | None:
    """Name patterns (with `{k}`) of a split's numbered shards; None for a split of fixed file names."""
    if format == "qqbrowser":
        return ["pointwise/pretrain_{k}.tfrecords"] if split == "pointwise" else None
    if format == "yt8m":
        return [f"frame/{split}/{split}{{k:04d}}.tfrecord", f"video/{split}/{split}{{k:04d}}.tfrecord"]
    return None


def first_free_shard(out_dir: str | Path, format: str, split: str, owned: set[str]) -> int:
    """The first shard number after every shard of the split that is not in `owned` (relative paths):
    videos added to a folder that already holds the split (say, YouTube-8M's own test shards) go into
    new shards numbered after them."""
    patterns = _shard_patterns(format, split)
    if not patterns:
        return 0
    root, last = Path(out_dir), -1
    for pattern in patterns:
        head, tail = pattern.split("{k")[0], pattern.split("}")[-1]
        for path in root.glob(head + "*" + tail):
            number = str(path.relative_to(root))[len(head) : -len(tail)]
            if number.isdigit() and str(path.relative_to(root)) not in owned:
                last = max(last, int(number))
    return last + 1


def split_files(
    out_dir: str | Path, format: str, split: str, num_videos: int, shard_size: int, first_shard: int = 0
) -> list[Path]:
    """The files a split of `num_videos` videos is written to (shards numbered from `first_shard`)."""
    root = Path(out_dir)
    patterns = _shard_patterns(format, split)
    if patterns:
        shards = range(first_shard, first_shard + max(1, -(-num_videos // shard_size)))
        return [root / pattern.format(k=k) for pattern in patterns for k in shards]
    if format == "qqbrowser":
        return [root / split / f"{split}.tfrecords"]
    return [root / "annotations" / f"{split}.json", root / "zip_feats" / f"{split}.zip"]


def write_split(files: list[Path], format: str, videos: Iterable[VideoFeatures], shard_size: int) -> None:
    """Write one split of extracted videos to `files` (from `split_files`), each file atomically."""
    for f in files:
        f.parent.mkdir(parents=True, exist_ok=True)
    if format == "qqbrowser":
        _write_records(files, (_qq_record(v) for v in videos), shard_size)
    elif format == "wbdc":
        _write_wbdc(files[0], files[1], videos)
    else:
        half = len(files) // 2
        _write_yt8m(files[:half], files[half:], videos, shard_size)


def _shards(items: Iterable, num_shards: int, shard_size: int) -> Iterator[Iterator]:
    """`num_shards` consecutive runs of `shard_size` items (one run of everything when num_shards is 1)."""
    items = iter(items)
    for _ in range(num_shards):
        yield itertools.islice(items, shard_size) if num_shards > 1 else items


def _write_records(paths: list[Path], records: Iterable[bytes], shard_size: int) -> None:
    for path, shard in zip(paths, _shards(records, len(paths), shard_size)):
        with TFRecordWriter(path) as writer:
            for record in shard:
                writer.write(record)


def _fp16(frames: np.ndarray) -> np.ndarray:
    return np.clip(frames, -_FP16_MAX, _FP16_MAX).astype("<f2")  # backbones rarely reach fp16's range


def _qq_record(video: VideoFeatures) -> bytes:
    f = video.fields
    record = {
        "id": video.id,
        "title": str(f.get("title") or ""),
        "asr_text": str(f.get("asr_text") or ""),
        "frame_feature": BytesList.from_rows(_fp16(video.frames)),
    }
    if f.get("tag_id") not in (None, ""):
        record["tag_id"] = Int64List(_int_list(f["tag_id"]))
    if f.get("category_id") not in (None, ""):
        record["category_id"] = int(f["category_id"])
    return encode_example(record)


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _write_wbdc(annotations: Path, features: Path, videos: Iterable[VideoFeatures]) -> None:
    entries = []

    def write_zip(f):
        with zipfile.ZipFile(f, "w") as zf:
            for v in videos:
                entry = {"id": v.id}
                if v.fields.get("category_id") not in (None, ""):
                    entry["category_id"] = str(v.fields["category_id"])
                ocr = v.fields.get("ocr") or []
                ocr = [{"time": 0, "text": ocr}] if isinstance(ocr, str) else list(ocr)
                entry.update(
                    title=str(v.fields.get("title") or ""), asr=str(v.fields.get("asr_text") or ""), ocr=ocr
                )
                entries.append(entry)
                info = zipfile.ZipInfo(f"{v.id}.npy", date_time=_ZIP_TIME)
                info.external_attr = 0o644 << 16
                zf.writestr(info, _npy_bytes(_fp16(v.frames).astype(np.float16)))

    atomic_write(features, write_zip)
    text = json.dumps(entries, ensure_ascii=False).encode("utf-8")
    atomic_write(annotations, lambda f: f.write(text))


def _yt8m_context(video: VideoFeatures) -> dict:
    f, context = video.fields, {"id": video.id}
    if f.get("labels") not in (None, ""):
        context["labels"] = Int64List(_int_list(f["labels"]))
    if f.get("segment_start_times") not in (None, ""):
        starts = _int_list(f["segment_start_times"])
        context["segment_start_times"] = Int64List(starts)
        context["segment_end_times"] = Int64List(starts + 5)
        context["segment_labels"] = Int64List(_int_list(f.get("segment_labels", [])))
        scores = _float_list(f.get("segment_scores") or [])
        context["segment_scores"] = FloatList(scores)
    return context


def _write_yt8m(frame_paths: list[Path], video_paths: list[Path], videos, shard_size: int) -> None:
    for frame_path, video_path, shard in zip(
        frame_paths, video_paths, _shards(videos, len(frame_paths), shard_size)
    ):
        with TFRecordWriter(frame_path) as frame_w, TFRecordWriter(video_path) as video_w:
            for v in shard:
                rgb, audio = quantize(v.frames), quantize(v.audio)
                context = _yt8m_context(v)
                frame_w.write(
                    encode_sequence_example(context, {"rgb": BytesList.from_rows(rgb).values,
                                                      "audio": BytesList.from_rows(audio).values})
                )  # fmt: skip
                level = {k: context[k] for k in ("id", "labels") if k in context}
                level["mean_rgb"] = FloatList(dequantize(rgb).mean(0))
                level["mean_audio"] = FloatList(dequantize(audio).mean(0))
                video_w.write(encode_example(level))


# ------------------------------------------------------------------------------------------ layout


def _bert_vocab(vocab: str | Path | None) -> Path | None:
    """The vocabulary to copy: `vocab`, else bert-base-chinese's as cn-clip ships it, else None."""
    if vocab:
        return Path(vocab)
    import importlib.util

    spec = importlib.util.find_spec("cn_clip")
    if spec and spec.submodule_search_locations:
        path = Path(spec.submodule_search_locations[0]) / "clip" / "vocab.txt"
        if path.is_file():
            return path
    return None


def _vocab_file(path: Path, vocab: str | Path | None) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    source = _bert_vocab(vocab)
    if source is not None:
        shutil.copyfile(source, path)
    else:  # one token per CJK character, as the sample data
        from vmmlib.data.qqbrowser.sample import write_vocab

        write_vocab(path)


def complete_layout(
    out_dir: str | Path, format: str, texts: dict[str, dict], vocab: str | Path | None = None
) -> list[Path]:
    """Create what the format's layout check needs and the folder lacks (see the module docstring).

    Returns:
        The files created.
    """
    root, made = Path(out_dir), []

    def touch(path: Path, content: bytes = b"") -> None:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            made.append(path)

    if format == "qqbrowser":
        tags = sorted({int(t) for f in texts.values() for t in _int_list(f.get("tag_id") or [])})
        touch(root / "tag_list.txt", "".join(f"{t}\n" for t in tags).encode())
        touch(root / "pairwise" / "label.tsv")
        touch(root / "pairwise" / "pairwise.tfrecords")
        if not list((root / "pointwise").glob("pretrain_*.tfrecords")):
            touch(root / "pointwise" / "pretrain_0.tfrecords")
        vocab_path = root / "chinese_L-12_H-768_A-12" / "vocab.txt"
    elif format == "wbdc":
        touch(root / "annotations" / "labeled.json", b"[]")
        vocab_path = root / "vocab.txt"
    else:
        return made
    if not vocab_path.exists():
        _vocab_file(vocab_path, vocab)
        made.append(vocab_path)
    return made
