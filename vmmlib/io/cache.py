"""An on-disk, memory-mapped cache of per-video frame features and metadata.

The first pass over the TFRecords writes a ragged frame array and the metadata columns; later epochs
read any record in any order from the memory map (the OS page cache), with no protobuf decoding.

Layout of a cache directory (every array a plain .npy file, so `np.load(..., mmap_mode="r")` reads it):

    manifest.json            format version, counts, frame dtype/dim, columns, and what it was built from
    frames.npy               (total_frames, frame_dim) frame_dtype: every record's frames, back to back
    frame_offsets.npy        (N + 1,) int64: record i's frames are frames[frame_offsets[i]:frame_offsets[i+1]]
    col{j}.values.npy        a metadata column's values, flat: int64, float32, or uint8 (bytes, concatenated)
    col{j}.offsets.npy       (N + 1,) int64: record i's items are items[offsets[i]:offsets[i+1]]
    col{j}.elements.npy      bytes columns only, (E + 1,) int64: element k is values[elements[k]:elements[k+1]]

Building streams: a record is written as soon as it is read, so memory stays bounded whatever the
size of the data. The directory is built under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from vmmlib.io.example import read_examples
from vmmlib.io.safe import check_file
from vmmlib.io.tfrecord import RecordError, tfrecord_index

__all__ = ["FrameCache"]

FORMAT_VERSION = 1
_NPY_HEADER_BYTES = 128  # reserved up front, rewritten with the final shape on close


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
    body = text.encode("latin1")
    pad = _NPY_HEADER_BYTES - 10 - len(body) - 1
    if pad < 0:
        raise ValueError(f"npy header too long: {text}")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", _NPY_HEADER_BYTES - 10) + body + b" " * pad + b"\n"


class _NpyAppender:
    """An .npy file written row block by row block, its shape fixed in the header on close."""

    def __init__(self, path: Path, dtype, width: int | None = None):
        self.path, self.dtype, self.width = path, np.dtype(dtype), width
        self.rows = 0
        self.file = open(path, "wb", buffering=1 << 20)
        self.file.write(bytes(_NPY_HEADER_BYTES))

    def append(self, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array, dtype=self.dtype)
        self.file.write(array.data.cast("B") if array.size else b"")
        self.rows += len(array)

    def append_scalar(self, value: int) -> None:
        self.file.write(struct.pack("<q", value))  # only used for int64 offsets
        self.rows += 1

    def close(self) -> None:
        shape = (self.rows,) if self.width is None else (self.rows, self.width)
        self.file.seek(0)
        self.file.write(_npy_header(self.dtype, shape))
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


_COLUMN_DTYPES = {"bytes": np.dtype("u1"), "int64": np.dtype("<i8"), "float": np.dtype("<f4")}


class _ColumnWriter:
    """One metadata column; its type is that of the first record holding the key."""

    def __init__(self, directory: Path, prefix: str, name: str):
        self.directory, self.prefix, self.name = directory, prefix, name
        self.kind: str | None = None
        self.values: _NpyAppender | None = None
        self.elements: _NpyAppender | None = None
        self.offsets = _NpyAppender(directory / f"{prefix}.offsets.npy", "<i8")
        self.offsets.append_scalar(0)
        self.items = 0  # items (values, or bytes elements) so far
        self.value_bytes = 0  # bytes columns: blob size so far

    def _start(self, kind: str) -> None:
        self.kind = kind
        self.values = _NpyAppender(self.directory / f"{self.prefix}.values.npy", _COLUMN_DTYPES[kind])
        if kind == "bytes":
            self.elements = _NpyAppender(self.directory / f"{self.prefix}.elements.npy", "<i8")
            self.elements.append_scalar(0)

    def add(self, value: Any, record_id: str) -> None:
        if value is not None:
            kind = _kind_of(value)
            if kind is not None and self.kind is None:
                self._start(kind)
            if kind is not None and kind != self.kind:
                raise TypeError(
                    f"record {record_id}: column {self.name!r} is {kind}, earlier records had {self.kind}"
                )
            if self.kind == "bytes" and len(value):
                blobs = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in value]
                ends = self.value_bytes + np.cumsum([len(b) for b in blobs], dtype=np.int64)
                self.values.append(np.frombuffer(b"".join(blobs), np.uint8))
                self.elements.append(ends)
                self.value_bytes = int(ends[-1])
                self.items += len(blobs)
            elif self.kind is not None and len(value):
                self.values.append(np.asarray(value).reshape(-1))
                self.items += np.asarray(value).size
        self.offsets.append_scalar(self.items)

    def close(self) -> dict:
        if self.kind is None:  # never seen: an empty bytes column
            self._start("bytes")
        for f in (self.values, self.elements, self.offsets):
            if f is not None:
                f.close()
        return {"name": self.name, "kind": self.kind, "prefix": self.prefix}


def _kind_of(value: Any) -> str | None:
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "iub":
            return "int64"
        if value.dtype.kind == "f":
            return "float"
        raise TypeError(f"unsupported metadata dtype {value.dtype}")
    if isinstance(value, (bytes, str)):
        raise TypeError("metadata bytes values must be lists of bytes, as decode_example returns them")
    if isinstance(value, (list, tuple)):
        return "bytes" if value else None  # an empty list says nothing about the type
    raise TypeError(f"unsupported metadata value {type(value).__name__}")


def _frames_of(record: Mapping, keys: Sequence[str], dims: Sequence[int], dtype: np.dtype, record_id: str):
    """A record's frames as a (L, sum(dims)) array of `dtype`."""
    parts = []
    for key, dim in zip(keys, dims):
        value = record.get(key)
        if value is None:
            value = np.empty((0, dim), dtype)
        elif isinstance(value, np.ndarray):
            value = value.reshape(-1, dim) if value.ndim == 1 and value.size % dim == 0 else value
        else:  # raw bytes elements, or per-step lists of them (SequenceExample without raw_dtypes)
            elements = [e for step in value for e in step] if value and isinstance(value[0], list) else value
            bad = [len(e) for e in elements if len(e) != dim * dtype.itemsize]
            if bad:
                raise ValueError(
                    f"record {record_id}: {key!r} element of {bad[0]} bytes, expected {dim * dtype.itemsize}"
                )
            value = np.frombuffer(b"".join(elements), dtype).reshape(-1, dim)
        if value.ndim != 2 or value.shape[1] != dim:
            raise ValueError(f"record {record_id}: {key!r} has shape {value.shape}, expected (L, {dim})")
        parts.append(value)
    if len({len(p) for p in parts}) > 1:
        raise ValueError(f"record {record_id}: frame keys {list(keys)} have {[len(p) for p in parts]} frames")
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def _located_error(reason: str, where: tuple[Path, int] | None) -> RecordError:
    """A RecordError naming the file and byte offset of record `where[1]` of `where[0]`."""
    if where is None:
        return RecordError(reason)
    path, index = where
    try:
        offsets = tfrecord_index(path, verify_crc=False)
        offset = int(offsets[index]) if index < len(offsets) else None
    except (OSError, ValueError):
        offset = None
    return RecordError(reason, path, offset)


def _as_tuple(x) -> tuple:
    return (x,) if isinstance(x, (str, int, np.integer)) else tuple(x)


def _int64_view(array: np.ndarray) -> memoryview:
    """A memoryview of an int64 array with Python-int indexing."""
    return memoryview(np.ascontiguousarray(array, dtype=np.int64)).cast("B").cast("q")


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished `tmp` to `target`, removing an older `target` (a reader that has the old one
    open keeps its memory maps: unlinked files live on until unmapped)."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(target, old)
    os.rename(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


class FrameCache:
    """Memory-mapped frames and metadata of N records; `cache[i]` reads one in O(1).

    Example:
        >>> cache = FrameCache.for_tfrecords(shards, "cache/pointwise", frame_key="frame_feature",
        ...                                  frame_dim=1536, meta_keys=("title", "tag_id"))
        >>> rec = cache[cache.index_of("2345203561710400875")]
        >>> rec["frames"].shape  # (L, 1536) float16, a private copy
    """

    def __init__(self, cache_dir: str | os.PathLike):
        """Open a built cache (same as `FrameCache.open`)."""
        self.cache_dir = Path(cache_dir)
        manifest_path = self.cache_dir / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{self.cache_dir} is not a frame cache (no manifest.json)")
        self.manifest = json.loads(manifest_path.read_text())
        if self.manifest.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"{self.cache_dir}: cache format {self.manifest.get('version')}, expected {FORMAT_VERSION}"
            )
        self.id_key: str = self.manifest["id_key"]
        # np.asarray drops the np.memmap subclass: slicing a plain ndarray view is several times cheaper
        self._frames = np.asarray(self._load("frames.npy"))
        self._frame_offsets = np.asarray(self._load("frame_offsets.npy"))
        # Python-level access goes through memoryviews (int64 offsets, uint8 blobs): indexing them is
        # several times cheaper than numpy scalar indexing, which matters at ~10 lookups per record.
        self._fo = _int64_view(self._frame_offsets)
        self._columns = []
        for col in self.manifest["columns"]:
            p = col["prefix"]
            values = np.asarray(self._load(f"{p}.values.npy"))
            offsets = _int64_view(self._load(f"{p}.offsets.npy"))
            if col["kind"] == "bytes":
                elements = _int64_view(self._load(f"{p}.elements.npy"))
                values = memoryview(values).cast("B")
            else:
                elements = None
            self._columns.append((col["name"], values, offsets, elements))
        self._index: dict[bytes, int] | None = None

    def _load(self, name: str) -> np.ndarray:
        return np.load(self.cache_dir / name, mmap_mode="r")

    @classmethod
    def open(cls, cache_dir: str | os.PathLike) -> FrameCache:
        return cls(cache_dir)

    @classmethod
    def build(
        cls,
        cache_dir: str | os.PathLike,
        records: Iterable[Mapping[str, Any] | tuple[Mapping, Mapping]],
        *,
        frame_key: str | Sequence[str],
        frame_dim: int | Sequence[int],
        frame_dtype: Any = np.float16,
        id_key: str = "id",
        meta_keys: Sequence[str] = (),
        source: Mapping[str, Any] | None = None,
        locate: Callable[[], tuple[Path, int] | None] | None = None,
    ) -> FrameCache:
        """Write a cache from decoded records and open it.

        Args:
            records: dicts as `read_examples` yields them, or `(context, feature_lists)` tuples (merged).
                A frame value is a `(L, dim)` array (e.g. decoded with `raw_dtypes`), or a list of raw
                little-endian `frame_dtype` elements of `dim` items each; a missing key means 0 frames.
            frame_key, frame_dim: the frame feature and its per-frame size; several keys (YouTube-8M
                `("rgb", "audio")`, `(1024, 128)`) are concatenated per frame into one row.
            frame_dtype: dtype of the stored frames (and of raw bytes elements).
            id_key: the record id (a bytes feature), indexed by `index_of`.
            meta_keys: other features to keep: bytes, int64 and float lists, ragged.
            source: stored in the manifest (what the cache was built from).
            locate: () → (file, record index) of the record being written: a record of the wrong
                shape or type is then a `RecordError` naming that file and the record's byte offset.
        """
        cache_dir = Path(cache_dir)
        keys, dims = _as_tuple(frame_key), tuple(int(d) for d in _as_tuple(frame_dim))
        if len(keys) != len(dims):
            raise ValueError(f"frame_key {keys} and frame_dim {dims} differ in length")
        dtype = np.dtype(frame_dtype).newbyteorder("<")
        names = [id_key, *[k for k in meta_keys if k != id_key]]
        cache_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{cache_dir.name}.", suffix=".tmp", dir=cache_dir.parent))
        try:
            frames = _NpyAppender(tmp / "frames.npy", dtype, width=sum(dims))
            offsets = _NpyAppender(tmp / "frame_offsets.npy", "<i8")
            offsets.append_scalar(0)
            columns = [_ColumnWriter(tmp, f"col{j}", name) for j, name in enumerate(names)]
            count = 0
            for record in records:
                if isinstance(record, tuple):
                    record = {**record[0], **record[1]}
                try:
                    ident = record.get(id_key)
                    record_id = repr(ident[0]) if isinstance(ident, list) and ident else f"#{count}"
                    rows = _frames_of(record, keys, dims, dtype, record_id)
                    frames.append(rows)
                    offsets.append_scalar(frames.rows)
                    for col in columns:
                        col.add(record.get(col.name), record_id)
                except (TypeError, ValueError) as e:
                    if isinstance(e, RecordError) or locate is None:
                        raise
                    raise _located_error(str(e), locate()) from None
                count += 1
            frames.close()
            offsets.close()
            manifest = {
                "version": FORMAT_VERSION,
                "num_records": count,
                "num_frames": frames.rows,
                "frame_keys": list(keys),
                "frame_dims": list(dims),
                "frame_dtype": dtype.str,
                "id_key": id_key,
                "columns": [col.close() for col in columns],
                "source": dict(source) if source else None,
            }
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
            _replace_dir(tmp, cache_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(cache_dir)

    @classmethod
    def for_tfrecords(
        cls,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        cache_dir: str | os.PathLike,
        *,
        frame_key: str | Sequence[str],
        frame_dim: int | Sequence[int],
        frame_dtype: Any = np.float16,
        id_key: str = "id",
        meta_keys: Sequence[str] = (),
        sequence: bool = False,
        verify_crc: bool = True,
        rebuild: bool = False,
    ) -> FrameCache:
        """Open the cache of these TFRecords, building it first if it is missing or stale.

        The manifest records each source's absolute path, size and mtime and the build options; any
        difference (a file rewritten, added or removed, another frame key ...) rebuilds the cache.
        QQ Browser: `frame_key="frame_feature", frame_dim=1536` (fp16). YouTube-8M frame level:
        `frame_key=("rgb", "audio"), frame_dim=(1024, 128), frame_dtype=np.uint8, sequence=True`.
        """
        given = [paths] if isinstance(paths, (str, os.PathLike)) else paths
        files = [check_file(p, what="record file").resolve() for p in given]  # a folder: InputError
        keys, dims = list(_as_tuple(frame_key)), [int(d) for d in _as_tuple(frame_dim)]
        stats = [f.stat() for f in files]
        source = {
            "paths": [str(f) for f in files],
            "sizes": [s.st_size for s in stats],
            "mtimes_ns": [s.st_mtime_ns for s in stats],
            "options": {
                "frame_keys": keys,
                "frame_dims": dims,
                "frame_dtype": np.dtype(frame_dtype).newbyteorder("<").str,
                "id_key": id_key,
                "meta_keys": list(meta_keys),
                "sequence": sequence,
            },
        }
        manifest_path = Path(cache_dir) / "manifest.json"
        if not rebuild and manifest_path.is_file():
            try:
                manifest = json.loads(manifest_path.read_text())
            except (OSError, ValueError):
                manifest = {}
            if manifest.get("version") == FORMAT_VERSION and manifest.get("source") == source:
                return cls(cache_dir)
        raw = {k: (np.dtype(frame_dtype).newbyteorder("<"), d) for k, d in zip(keys, dims)}
        wanted = [*keys, id_key, *meta_keys]
        where: list = [None]  # (file, index) of the record being written

        def located(f: Path):
            for index, record in enumerate(
                read_examples(f, keys=wanted, sequence=sequence, verify_crc=verify_crc, raw_dtypes=raw)
            ):
                where[0] = (f, index)
                yield record

        records = chain.from_iterable(located(f) for f in files)
        return cls.build(
            cache_dir,
            records,
            frame_key=keys,
            frame_dim=dims,
            frame_dtype=frame_dtype,
            id_key=id_key,
            meta_keys=meta_keys,
            source=source,
            locate=lambda: where[0],
        )

    def __len__(self) -> int:
        return len(self._fo) - 1

    @property
    def frame_dim(self) -> int:
        return self._frames.shape[1]

    @property
    def num_frames(self) -> np.ndarray:
        """(N,) int64: frames per record."""
        return np.diff(self._frame_offsets)

    def _position(self, i: int) -> int:
        n = len(self._fo) - 1
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"record {i} out of range for a cache of {n}")
        return i

    def frames(self, i: int) -> np.ndarray:
        """Record i's frames, (L, frame_dim): a zero-copy read-only view into the memory map."""
        i = self._position(i)
        return self._frames[self._fo[i] : self._fo[i + 1]]

    def __getitem__(self, i: int) -> dict[str, Any]:
        """Record i: `{"frames": (L, frame_dim) private copy, id and meta keys as decode_example gives them}`."""
        i = self._position(i)
        return {"frames": self._frames[self._fo[i] : self._fo[i + 1]].copy(), **self.meta(i)}

    def meta(self, i: int) -> dict[str, Any]:
        """Record i's id and meta keys (as decode_example gives them), without reading its frames."""
        i = self._position(i)
        out: dict[str, Any] = {}
        for name, values, offsets, elements in self._columns:
            s, e = offsets[i], offsets[i + 1]
            if elements is not None:  # bytes: a list of elements, usually one
                if e - s == 1:
                    out[name] = [values[elements[s] : elements[e]].tobytes()]
                else:
                    out[name] = [values[elements[k] : elements[k + 1]].tobytes() for k in range(s, e)]
            else:
                out[name] = values[s:e].copy()
        return out

    @property
    def ids(self) -> list[bytes]:
        """Each record's id (the first element of the id feature; b"" if it had none)."""
        _, values, offsets, elements = self._columns[0]
        out = []
        for i in range(len(self)):
            s, e = offsets[i], offsets[i + 1]
            out.append(values[elements[s] : elements[s + 1]].tobytes() if e > s else b"")
        return out

    def index_of(self, record_id: str | bytes) -> int:
        """Position of the record with this id (the first one, if ids repeat). KeyError if absent."""
        if self._index is None:
            index: dict[bytes, int] = {}
            for i, ident in enumerate(self.ids):
                index.setdefault(ident, i)
            self._index = index
        key = record_id.encode("utf-8") if isinstance(record_id, str) else bytes(record_id)
        try:
            return self._index[key]
        except KeyError:
            raise KeyError(f"id {record_id!r} is not in the cache at {self.cache_dir}") from None

    def __repr__(self) -> str:
        return f"FrameCache({str(self.cache_dir)!r}, records={len(self)}, frames={self._frames.shape})"
