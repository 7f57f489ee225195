"""TFRecord framing without TensorFlow: write, read, index and seek records.

A TFRecord file is a sequence of records, each framed as

    uint64 length (little-endian) | uint32 masked CRC-32C of the 8 length bytes | data | uint32 masked CRC-32C of data

with `masked(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8 (mod 2**32)` (TensorFlow's
`tensorflow/core/lib/hash/crc32c.h`). Both checksums are verified on read unless asked not to. Every
framing problem raises `RecordError`, which names the file and the byte offset of the record start.
Gzip-compressed files are not supported.
"""

from __future__ import annotations

import mmap
import os
import struct
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import crc32c as _crc32c
import numpy as np

from vmmlib.io.safe import InputError

__all__ = [
    "RecordError",
    "TFRecordWriter",
    "iter_tfrecord",
    "iter_tfrecord_with_offsets",
    "masked_crc32c",
    "read_record_at",
    "record_spans",
    "tfrecord_index",
    "write_tfrecord",
]

_MASK_DELTA = 0xA282EAD8
_HEADER = struct.Struct("<QI")  # length, masked crc of the length bytes
_FOOTER = struct.Struct("<I")  # masked crc of the data
_LENGTH = struct.Struct("<Q")
_crc = _crc32c.crc32c


class RecordError(InputError):
    """A record that cannot be read: bad framing, checksum, protobuf or feature type.

    An `InputError` (so `vmm` prints it in one line), with the record's offset as its `where`.

    Attributes:
        path: the file, or None when decoding bytes that came from nowhere in particular.
        offset: byte offset of the record's start (its length field) in `path`, or None.
        reason: the message without the location prefix.
    """

    def __init__(self, reason: str, path: str | os.PathLike | None = None, offset: int | None = None):
        self.offset = offset
        super().__init__(path, reason, None if offset is None else f"record at byte offset {offset}")

    def __reduce__(self):  # keep path/offset when pickled across DataLoader worker processes
        return (type(self), (self.reason, self.path, self.offset))


def masked_crc32c(data: bytes | bytearray | memoryview) -> int:
    """TFRecord's masked CRC-32C (Castagnoli) of `data`, as an unsigned 32-bit int."""
    return _masked(_crc(data))


def _masked(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def _frame_header(length: int) -> bytes:
    length_bytes = _LENGTH.pack(length)
    return length_bytes + _FOOTER.pack(masked_crc32c(length_bytes))


class TFRecordWriter:
    """Write records to `path` atomically: into a temporary file beside it, renamed over `path` on close.

    If the `with` block raises, the temporary file is removed and `path` is left untouched.

    Example:
        >>> with TFRecordWriter("out.tfrecords") as w:
        ...     w.write(encode_example({"id": "v1"}))
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.num_records = 0
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent or ".")
        self._tmp_path = tmp
        self._file = os.fdopen(fd, "wb", buffering=1 << 20)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append one record holding `data` (usually a serialized Example)."""
        if self._file is None:
            raise ValueError(f"{self.path}: writer is closed")
        write = self._file.write
        write(_frame_header(len(data)))
        write(data)
        write(_FOOTER.pack(masked_crc32c(data)))
        self.num_records += 1

    def close(self) -> None:
        """Flush, fsync and move the file into place. Closing twice is a no-op."""
        if self._file is None:
            return
        f, self._file = self._file, None
        try:
            f.flush()
            os.fsync(f.fileno())
        finally:
            f.close()
        os.chmod(self._tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual permissions
        os.replace(self._tmp_path, self.path)

    def abort(self) -> None:
        """Discard everything written; `path` is not touched."""
        if self._file is None:
            return
        f, self._file = self._file, None
        f.close()
        os.unlink(self._tmp_path)

    def __enter__(self) -> TFRecordWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self):
        if getattr(self, "_file", None) is not None:
            warnings.warn(
                f"TFRecordWriter({self.path}) was never closed: discarded", ResourceWarning, stacklevel=2
            )
            self.abort()


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def write_tfrecord(path: str | os.PathLike, records: Iterable[bytes]) -> int:
    """Write every item of `records` (bytes) as one record; return how many were written."""
    with TFRecordWriter(path) as writer:
        for data in records:
            writer.write(data)
    return writer.num_records


_WINDOW = 16 << 20  # bytes of file mapped at a time: bounds the reader's resident memory


def record_spans(
    path: str | os.PathLike,
    *,
    verify_crc: bool = True,
    shard: tuple[int, int] | None = None,
    start_offset: int = 0,
) -> Iterator[tuple[int, mmap.mmap, int, int]]:
    """Low-level reader: yield `(offset, buf, start, stop)` per record, the data being `buf[start:stop]`.

    `buf` is a read-only memory map of a window of the file, valid only until the next item is
    requested: decode or copy what you need before moving on. This spares the copy of every record into
    a fresh bytes object; the decoders in `vmmlib.io.example` read straight from the map. Arguments and
    errors as in `iter_tfrecord_with_offsets`.
    """
    keep, every = (0, 1) if shard is None else shard
    if not 0 <= keep < every:
        raise ValueError(f"shard must be (k, n) with 0 <= k < n, got {shard}")
    unpack_header, unpack_footer, crc = _HEADER.unpack_from, _FOOTER.unpack_from, _crc
    if os.path.isdir(path):  # open() would say IsADirectoryError, naming no record file
        raise RecordError("a folder, not a TFRecord file", path)
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        buf = view = None
        base = stop_mapped = 0  # the window maps file bytes [base, stop_mapped)

        def remap(lo: int, hi: int) -> None:
            nonlocal buf, view, base, stop_mapped
            _unmap(buf, view)
            base = lo - lo % mmap.ALLOCATIONGRANULARITY
            stop_mapped = min(size, max(hi, base + _WINDOW))
            buf = mmap.mmap(fd, stop_mapped - base, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ, offset=base)
            view = memoryview(buf)

        try:
            offset, index = start_offset, 0
            while offset < size:
                if offset + 12 > size:
                    raise RecordError(f"truncated header ({size - offset} of 12 bytes)", path, offset)
                if offset + 12 > stop_mapped:
                    remap(offset, offset + 12)
                rel = offset - base
                length, length_crc = unpack_header(buf, rel)
                if verify_crc and _masked(crc(view[rel : rel + 8])) != length_crc:
                    raise RecordError(
                        f"length CRC mismatch (stored {length_crc:#010x}, computed {_masked(crc(view[rel : rel + 8])):#010x})",
                        path,
                        offset,
                    )
                end = offset + 16 + length
                if end > size:
                    what = "data" if offset + 12 + length > size else "footer"
                    raise RecordError(
                        f"truncated {what} (record of {length} bytes needs {end - offset}, "
                        f"file has {size - offset} left)",
                        path,
                        offset,
                    )
                if index % every == keep:
                    if end > stop_mapped:
                        remap(offset, end)
                        rel = offset - base
                    start = rel + 12
                    if verify_crc:
                        (data_crc,) = unpack_footer(buf, start + length)
                        computed = crc(view[start : start + length])
                        computed = (((computed >> 15) | (computed << 17)) + _MASK_DELTA) & 0xFFFFFFFF
                        if computed != data_crc:
                            raise RecordError(
                                f"data CRC mismatch (stored {data_crc:#010x}, computed {computed:#010x})",
                                path,
                                offset,
                            )
                    yield offset, buf, start, start + length
                offset = end
                index += 1
        finally:
            _unmap(buf, view)


def _unmap(buf: mmap.mmap | None, view: memoryview | None) -> None:
    if buf is None:
        return
    view.release()
    try:
        buf.close()
    except BufferError:  # something still holds a view into the window: the GC unmaps it later
        pass


def iter_tfrecord_with_offsets(
    path: str | os.PathLike,
    *,
    verify_crc: bool = True,
    shard: tuple[int, int] | None = None,
    start_offset: int = 0,
) -> Iterator[tuple[int, bytes]]:
    """Yield `(offset, data)` for each record of `path`, `offset` being the byte offset of the record start.

    Args:
        verify_crc: check the masked CRC-32C of the length and of the data.
        shard: `(k, n)` keeps only records whose index `i` (counted from `start_offset`) has `i % n == k`.
            The others are skipped after reading their 12-byte header: their data is never read,
            decoded or checksummed.
        start_offset: where to start; must be the offset of a record start (see `tfrecord_index`).

    Raises:
        RecordError: truncated header, data or footer, or a checksum mismatch.
    """
    for offset, buf, start, stop in record_spans(
        path, verify_crc=verify_crc, shard=shard, start_offset=start_offset
    ):
        yield offset, buf[start:stop]


def iter_tfrecord(
    path: str | os.PathLike, *, verify_crc: bool = True, shard: tuple[int, int] | None = None
) -> Iterator[bytes]:
    """Yield the data of each record of `path` (see `iter_tfrecord_with_offsets`)."""
    for _, data in iter_tfrecord_with_offsets(path, verify_crc=verify_crc, shard=shard):
        yield data


def tfrecord_index(path: str | os.PathLike, *, verify_crc: bool = True) -> np.ndarray:
    """Byte offsets of every record start, `(num_records,) int64`. Reads only the 12-byte headers.

    With `verify_crc`, the length checksums are checked (the data checksums are not: that needs the data).
    """
    offsets = []
    unpack_header = _HEADER.unpack
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        offset = 0
        while offset < size:
            header = os.pread(f.fileno(), 12, offset)
            if len(header) < 12:
                raise RecordError(f"truncated header ({len(header)} of 12 bytes)", path, offset)
            length, length_crc = unpack_header(header)
            if verify_crc and masked_crc32c(header[:8]) != length_crc:
                raise RecordError(
                    f"length CRC mismatch (stored {length_crc:#010x}, computed {masked_crc32c(header[:8]):#010x})",
                    path,
                    offset,
                )
            end = offset + 16 + length
            if end > size:
                raise RecordError(
                    f"truncated record (needs {end - offset} bytes, file has {size - offset} left)",
                    path,
                    offset,
                )
            offsets.append(offset)
            offset = end
    return np.asarray(offsets, dtype=np.int64)


def read_record_at(path: str | os.PathLike, offset: int, *, verify_crc: bool = True) -> bytes:
    """The data of the record starting at byte `offset` of `path` (an offset from `tfrecord_index`)."""
    offset = int(offset)
    with open(path, "rb", buffering=0) as f:
        fd = f.fileno()
        header = os.pread(fd, 12, offset)
        if len(header) < 12:
            raise RecordError(f"truncated header ({len(header)} of 12 bytes)", path, offset)
        length, length_crc = _HEADER.unpack(header)
        if verify_crc and masked_crc32c(header[:8]) != length_crc:
            raise RecordError(
                f"length CRC mismatch (stored {length_crc:#010x}, computed {masked_crc32c(header[:8]):#010x})",
                path,
                offset,
            )
        size = os.fstat(fd).st_size
        if offset + 16 + length > size:
            raise RecordError(
                f"truncated record (needs {16 + length} bytes, file has {size - offset} left)", path, offset
            )
        body = os.pread(fd, length + 4, offset + 12)
    data = body[:length]
    if verify_crc:
        (data_crc,) = _FOOTER.unpack(body[length:])
        computed = masked_crc32c(data)
        if computed != data_crc:
            raise RecordError(
                f"data CRC mismatch (stored {data_crc:#010x}, computed {computed:#010x})", path, offset
            )
    return data
