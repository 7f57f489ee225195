"""The one door for untrusted files: limits, containment and one error type naming file and place.

Every reader, validator, evaluator, `prepare`, `extract`, the online cache and the pipeline loader
opens user files through these functions, never through `json.load`, `zipfile.ZipFile`, `np.load`,
`Image.open`, `pd.read_csv` or `yaml.safe_load` directly (a test greps for it). Each function
refuses what would exhaust memory or leave the data's root (decompression and zip bombs, npy
headers declaring petabytes, JSON nested past the interpreter's stack, paths that climb out, links
out of the root) and turns every failure into one `InputError` that names the file, the place in it
and the reason, so `vmm` prints one line and a notebook shows it as the cell's error.

Limits live in one frozen dataclass, `Limits`; every function takes `limits=` to raise one for a
trusted, unusually large file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "DEFAULT_LIMITS",
    "InputError",
    "Limits",
    "SafeZip",
    "check_file",
    "check_name",
    "decode_image",
    "image_size",
    "inside",
    "iter_csv_rows",
    "iter_jsonl",
    "iter_lines",
    "load_npy",
    "npy_header",
    "open_image",
    "open_zip",
    "parse_json",
    "read_bytes",
    "read_csv",
    "read_json",
    "read_text",
    "read_yaml",
    "relative_path_problem",
]

_GiB = 1 << 30
_MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """What one untrusted file may cost. Defaults fit every real competition file with room to spare."""

    max_file_bytes: int = 64 * _GiB  # any file we open (shards, TSVs, zips)
    max_text_bytes: int = 1 * _GiB  # a text/JSON/YAML file read whole into memory
    max_line_bytes: int = 256 * _MiB  # one line of a streamed text file (MUGE base64 images are long)
    max_json_depth: int = 64  # nesting of objects/arrays (real files: under 6)
    max_zip_members: int = 5_000_000  # WBDC's feature zips hold ~100k members
    max_member_bytes: int = 1 * _GiB  # one zip member, decompressed
    max_zip_ratio: float = 100.0  # decompressed / compressed size of one member (fp16 features: ~1.1)
    max_array_bytes: int = 2 * _GiB  # an npy array's declared size
    max_array_dims: int = 8
    max_image_pixels: int = 50_000_000  # width × height from the header, before any decode
    max_yaml_bytes: int = 16 * _MiB


DEFAULT_LIMITS = Limits()


class InputError(ValueError):
    """A user file that cannot be accepted: names the file, the place in it and the reason.

    Attributes:
        path: the file (or folder), as given.
        where: the place in it ("line 3", "byte offset 17", "member 'a.npy'", "key 'id'"), or None.
        reason: what is wrong, without the location prefix.
    """

    def __init__(self, path: str | os.PathLike | None, reason: str, where: str | None = None):
        self.path = None if path is None else os.fspath(path)
        self.where = where
        self.reason = reason
        super().__init__(": ".join(p for p in (self.path, where, reason) if p))

    def __reduce__(self):  # keep the fields when pickled across DataLoader worker processes
        return (type(self), (self.path, self.reason, self.where))


# --------------------------------------------------------------------------------------------- paths

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.-]+")


def check_name(name: Any, what: str = "name", *, source: str | os.PathLike | None = None) -> str:
    """`name` if it is a plain file name (`[A-Za-z0-9_.-]`, not `.` or `..`), else InputError.

    Use for every name that becomes a path component (pipeline steps, run names, ids used as file names).
    """
    if not isinstance(name, str) or not _PLAIN_NAME.fullmatch(name) or name in (".", ".."):
        raise InputError(
            source, f"{what} {name!r} is not a plain name (letters, digits, '_', '.', '-'; not '.' or '..')"
        )
    return name


def inside(root: str | os.PathLike, path: str | os.PathLike, *, what: str = "path") -> Path:
    """`root / path` resolved (links followed), refusing anything that lies outside `root`.

    `path` may be relative to `root` or absolute; either way the resolved result must be `root`
    itself or below it. Use it for every path taken from data, config or a command line that a
    reader opens, or a writer writes or deletes.
    """
    base = Path(root).resolve()
    if isinstance(path, str) and "\x00" in path:
        raise InputError(root, f"{what} {path!r} holds a NUL byte")
    target = (base / path).resolve()
    if target != base and base not in target.parents:
        raise InputError(root, f"{what} {os.fspath(path)!r} leads outside {base}")
    return target


def check_file(path: str | os.PathLike, *, what: str = "file", max_bytes: int | None = None) -> Path:
    """`path` if it is an existing regular file no larger than `max_bytes`, else InputError."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError(p, f"{what} not found") from None
    except OSError as e:
        raise InputError(p, f"{what} cannot be read ({e.strerror or e})") from None
    if not p.is_file():
        raise InputError(p, f"{what} is not a regular file")
    limit = DEFAULT_LIMITS.max_file_bytes if max_bytes is None else max_bytes
    if st.st_size > limit:
        raise InputError(p, f"{what} is {st.st_size:,} bytes, over the limit of {limit:,}")
    return p


# ---------------------------------------------------------------------------------------------- text


def read_bytes(path: str | os.PathLike, *, limits: Limits = DEFAULT_LIMITS, what: str = "file") -> bytes:
    """The whole file, refusing a missing file, a folder or one over `limits.max_text_bytes`."""
    p = check_file(path, what=what, max_bytes=limits.max_text_bytes)
    try:
        return p.read_bytes()
    except OSError as e:
        raise InputError(p, f"{what} cannot be read ({e.strerror or e})") from None


def _decode(data: bytes, path: str | os.PathLike, first_line: int = 1) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = first_line + data.count(b"\n", 0, e.start)
        raise InputError(path, f"not valid UTF-8 (byte 0x{data[e.start]:02x})", f"line {line}") from None


def read_text(path: str | os.PathLike, *, limits: Limits = DEFAULT_LIMITS, what: str = "file") -> str:
    """The file as UTF-8 text (a leading BOM dropped); invalid bytes name their line."""
    data = read_bytes(path, limits=limits, what=what)
    return _decode(data.removeprefix(b"\xef\xbb\xbf"), path)


def iter_lines(
    path: str | os.PathLike, *, limits: Limits = DEFAULT_LIMITS, what: str = "file"
) -> Iterator[tuple[int, str]]:
    """(line number from 1, line without its end) for each line, streamed: memory stays one line.

    A BOM is dropped, CRLF endings are accepted, and a line over `limits.max_line_bytes` or with
    invalid UTF-8 raises InputError naming the line.
    """
    p = check_file(path, what=what, max_bytes=limits.max_file_bytes)
    with open(p, "rb") as f:
        for number, raw in enumerate(_bounded_lines(f, p, limits.max_line_bytes), start=1):
            if number == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            yield number, _decode(raw.rstrip(b"\r\n"), p, number)


def _bounded_lines(f: IO[bytes], path: Path, max_line: int) -> Iterator[bytes]:
    number = 0
    while True:
        raw = f.readline(max_line + 1)
        if not raw:
            return
        number += 1
        if len(raw) > max_line and not raw.endswith(b"\n"):
            raise InputError(path, f"line longer than {max_line:,} bytes", f"line {number}")
        yield raw


# ---------------------------------------------------------------------------------------------- JSON


def _json_error(path: str | os.PathLike, e: json.JSONDecodeError, first_line: int = 1) -> InputError:
    return InputError(path, f"invalid JSON ({e.msg})", f"line {first_line + e.lineno - 1} column {e.colno}")


def _depth_ok(value: Any, max_depth: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > max_depth:
            return False
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return True


def parse_json(
    text: str | bytes,
    path: str | os.PathLike | None,
    *,
    limits: Limits = DEFAULT_LIMITS,
    where: str | None = None,
    first_line: int = 1,
) -> Any:
    """Parse JSON text that came from `path` (`where` in it), refusing bad syntax, NaN/Infinity
    literals, numbers that overflow to inf, and nesting deeper than `limits.max_json_depth`."""

    def refuse_constant(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    def finite_float(text: str) -> float:
        value = float(text)
        if not np.isfinite(value):
            raise ValueError(f"number {text[:40]} overflows a float")
        return value

    try:
        value = json.loads(text, parse_constant=refuse_constant, parse_float=finite_float)
    except json.JSONDecodeError as e:
        if where is not None:
            raise InputError(path, f"invalid JSON ({e.msg} at column {e.colno})", where) from None
        raise _json_error(path, e, first_line) from None
    except RecursionError:
        raise InputError(path, f"JSON nested deeper than {limits.max_json_depth} levels", where) from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(path, f"invalid JSON ({e})", where) from None
    if not _depth_ok(value, limits.max_json_depth):
        raise InputError(path, f"JSON nested deeper than {limits.max_json_depth} levels", where)
    return value


def read_json(path: str | os.PathLike, *, limits: Limits = DEFAULT_LIMITS, what: str = "JSON file") -> Any:
    """A whole JSON file (at most `limits.max_text_bytes`); errors name file, line and column."""
    return parse_json(read_text(path, limits=limits, what=what), path, limits=limits)


def iter_jsonl(
    path: str | os.PathLike, *, limits: Limits = DEFAULT_LIMITS, what: str = "JSON lines file"
) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line of a JSON-lines file, streamed."""
    for number, line in iter_lines(path, limits=limits, what=what):
        if line.strip():
            yield number, parse_json(line, path, limits=limits, where=f"line {number}")


# ----------------------------------------------------------------------------------------------- CSV


def iter_csv_rows(
    path: str | os.PathLike,
    *,
    delimiter: str = ",",
    limits: Limits = DEFAULT_LIMITS,
    what: str = "CSV file",
) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) for each non-blank row of a delimited text file, streamed.

    Quoted fields may not span lines (no competition file does), so the number is the file's line.
    """
    for number, line in iter_lines(path, limits=limits, what=what):
        if not line.strip():
            continue
        try:
            fields = next(csv.reader([line], delimiter=delimiter, strict=True))
        except csv.Error as e:
            raise InputError(path, f"malformed row ({e})", f"line {number}") from None
        yield number, fields


def read_csv(
    path: str | os.PathLike,
    *,
    limits: Limits = DEFAULT_LIMITS,
    what: str = "CSV file",
    **read_csv_kwargs: Any,
):
    """`pandas.read_csv` on a checked file, every failure an InputError naming file and line."""
    import pandas as pd

    p = check_file(path, what=what, max_bytes=limits.max_text_bytes)
    try:
        return pd.read_csv(p, encoding="utf-8", encoding_errors="strict", **read_csv_kwargs)
    except UnicodeDecodeError:
        _decode(p.read_bytes(), p)  # names the line
        raise
    except pd.errors.EmptyDataError:
        raise InputError(p, f"{what} is empty") from None
    except (pd.errors.ParserError, ValueError) as e:
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        match = re.search(r"line (\d+)", text)
        raise InputError(
            p, f"malformed {what} ({text})", f"line {match.group(1)}" if match else None
        ) from None


# ---------------------------------------------------------------------------------------------- YAML


def read_yaml(path: str | os.PathLike, *, limits: Limits = DEFAULT_LIMITS, what: str = "YAML file") -> Any:
    """A YAML file (safe loader, at most `limits.max_yaml_bytes`); syntax errors name the line."""
    import yaml

    text = read_text(path, limits=replace(limits, max_text_bytes=limits.max_yaml_bytes), what=what)
    try:
        value = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else None
        raise InputError(path, f"invalid YAML ({e.problem or e.context})", where) from None
    except (yaml.YAMLError, RecursionError) as e:
        raise InputError(path, f"invalid YAML ({type(e).__name__})") from None
    if not _depth_ok(value, limits.max_json_depth):
        raise InputError(path, f"YAML nested deeper than {limits.max_json_depth} levels")
    return value


# ----------------------------------------------------------------------------------------------- zip


class SafeZip:
    """A zip archive opened for reading with its directory checked against `Limits`.

    On open: member count, and for every member a plain relative name, a declared size under
    `max_member_bytes` and a compression ratio under `max_zip_ratio`. `read` enforces the size
    again while decompressing, so a lying directory cannot get past it. Picklable (reopens lazily),
    so it can cross DataLoader worker processes.
    """

    def __init__(self, path: str | os.PathLike, *, limits: Limits = DEFAULT_LIMITS):
        self.path = check_file(path, what="zip file", max_bytes=limits.max_file_bytes)
        self.limits = limits
        self._zip: zipfile.ZipFile | None = None
        self.members = self._check(self.handle())

    def handle(self) -> zipfile.ZipFile:
        if self._zip is None:
            try:
                self._zip = zipfile.ZipFile(self.path, "r")
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as e:
                raise InputError(self.path, f"not a readable zip file ({e})") from None
        return self._zip

    def _check(self, zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
        infos = zf.infolist()
        lim = self.limits
        if len(infos) > lim.max_zip_members:
            raise InputError(self.path, f"{len(infos):,} members, over the limit of {lim.max_zip_members:,}")
        members = {}
        for info in infos:
            name = info.filename
            where = f"member {name!r}"
            if name.startswith(("/", "\\")) or ".." in re.split(r"[/\\]", name) or ":" in name[:3]:
                raise InputError(self.path, "member name is absolute or climbs out", where)
            if info.file_size > lim.max_member_bytes:
                raise InputError(
                    self.path, f"declares {info.file_size:,} bytes, over {lim.max_member_bytes:,}", where
                )
            if info.file_size > (1 << 16) and info.file_size > lim.max_zip_ratio * max(info.compress_size, 1):
                raise InputError(
                    self.path,
                    f"compression ratio {info.file_size / max(info.compress_size, 1):.0f}:1 is over "
                    f"{lim.max_zip_ratio:.0f}:1 (a zip bomb?)",
                    where,
                )
            if name in members:
                raise InputError(self.path, "member name appears twice", where)
            members[name] = info
        return members

    def names(self) -> list[str]:
        """Member names in archive order (folders included, as stored)."""
        return list(self.members)

    def read(self, name: str) -> bytes:
        """One member's bytes; InputError for a missing or corrupt member, or one bigger than declared."""
        info = self.members.get(name)
        if info is None:
            raise InputError(self.path, "no such member", f"member {name!r}")
        try:
            with self.handle().open(info) as f:
                data = f.read(info.file_size + 1)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError, zlib.error) as e:
            raise InputError(self.path, f"corrupt member ({e})", f"member {name!r}") from None
        if len(data) != info.file_size:
            raise InputError(self.path, "member size differs from its directory entry", f"member {name!r}")
        return data

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def __enter__(self) -> SafeZip:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_zip": None}


def open_zip(path: str | os.PathLike, *, limits: Limits = DEFAULT_LIMITS) -> SafeZip:
    """Open a zip archive with its directory checked (see `SafeZip`)."""
    return SafeZip(path, limits=limits)


# ----------------------------------------------------------------------------------------------- npy

_NUMERIC_KINDS = "biuf"  # bool, signed, unsigned, float: what features and labels are made of


def load_npy(
    source: bytes | str | os.PathLike,
    *,
    path: str | os.PathLike | None = None,
    where: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> np.ndarray:
    """An `.npy` array from bytes (a zip member) or a file, its header checked before any data is read.

    Refuses object and other non-numeric dtypes (no pickles), more than `max_array_dims` dimensions,
    negative sizes and a declared size over `max_array_bytes`, and data shorter than declared.
    `path`/`where` name the source in errors (default: the file itself).
    """
    origin = _origin(source, path)
    if isinstance(source, (bytes, bytearray, memoryview)):
        f: IO[bytes] = io.BytesIO(source)
    else:
        f = open(check_file(source, what="npy file", max_bytes=limits.max_file_bytes), "rb")
    try:
        return _read_npy(f, origin, where, limits)
    finally:
        f.close()


def npy_header(f: IO[bytes], origin: Any, where: str | None = None) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) an npy stream declares, read without its data; the stream is
    left at the data. Anything that is not an npy header of version 1 or 2 is an InputError."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        reader = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
        if reader is None:
            raise ValueError(f"unsupported npy version {version}")
        return reader(f, max_header_size=10_000)
    except (ValueError, EOFError, SyntaxError, TypeError) as e:
        raise InputError(origin, f"not an npy array ({e})", where) from None


def _read_npy(f: IO[bytes], origin: Any, where: str | None, limits: Limits) -> np.ndarray:
    shape, fortran, dtype = npy_header(f, origin, where)
    if dtype.kind not in _NUMERIC_KINDS or dtype.hasobject or dtype.fields is not None:
        raise InputError(origin, f"npy dtype {dtype} is not numeric", where)
    if len(shape) > limits.max_array_dims or any(int(n) < 0 for n in shape):
        raise InputError(origin, f"npy shape {shape} is not acceptable", where)
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if nbytes > limits.max_array_bytes:
        raise InputError(
            origin, f"npy shape {shape} declares {nbytes:,} bytes, over {limits.max_array_bytes:,}", where
        )
    data = f.read(nbytes)
    if len(data) != nbytes:
        raise InputError(origin, f"npy data is {len(data):,} bytes, its header declares {nbytes:,}", where)
    array = np.frombuffer(data, dtype=dtype)
    return array.reshape(shape, order="F" if fortran else "C").copy()


# -------------------------------------------------------------------------------------------- images


def image_size(
    source: bytes | str | os.PathLike,
    *,
    path: str | os.PathLike | None = None,
    where: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[int, int]:
    """(width, height) from the image's header alone, refusing more than `max_image_pixels`."""
    with open_image(source, path=path, where=where, limits=limits) as image:
        return image.size


def open_image(
    source: bytes | str | os.PathLike,
    *,
    path: str | os.PathLike | None = None,
    where: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    draft: tuple[int, int] | None = None,
):
    """A lazily decoded PIL image whose header passed the pixel limit (nothing decoded yet).

    `draft=(w, h)` asks JPEG to decode at the smallest scale (1/2, 1/4, 1/8) still at least that
    size, which cuts decoding time and memory by up to 64×. Decode with `.load()`/`.convert()`
    inside `decode_image` or catch errors yourself; use as a context manager.
    """
    from PIL import Image, UnidentifiedImageError

    origin = _origin(source, path)
    if isinstance(source, (bytes, bytearray, memoryview)):
        stream: Any = io.BytesIO(bytes(source))
    else:
        stream = check_file(source, what="image", max_bytes=limits.max_file_bytes)
    try:
        image = Image.open(stream)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as e:
        raise InputError(origin, f"not a readable image ({e})", where) from None
    width, height = image.size
    if width <= 0 or height <= 0 or width * height > limits.max_image_pixels:
        image.close()
        raise InputError(
            origin, f"image of {width}×{height} pixels is over {limits.max_image_pixels:,}", where
        )
    if draft is not None and image.format == "JPEG":
        image.draft(image.mode, draft)
    return image


def decode_image(
    source: bytes | str | os.PathLike,
    *,
    mode: str = "RGB",
    path: str | os.PathLike | None = None,
    where: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
    draft: tuple[int, int] | None = None,
):
    """A fully decoded image in `mode`, pixel limit checked first; decoding errors are InputErrors."""
    from PIL import Image

    with open_image(source, path=path, where=where, limits=limits, draft=draft) as image:
        try:
            return image.convert(mode)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise InputError(_origin(source, path), f"corrupt image ({e})", where) from None


def _origin(source: Any, path: str | os.PathLike | None) -> str | os.PathLike | None:
    """What errors name: `path` if given, else the file itself (None for anonymous bytes)."""
    if path is not None or isinstance(source, (bytes, bytearray, memoryview)):
        return path
    return source


# ------------------------------------------------------------------------------ paths in annotations


def relative_path_problem(value: Any) -> str | None:
    """Why a path taken from annotations cannot name a file below its root (None if it can): not a
    string, empty, absolute, a drive, a `..` component or a NUL byte. A static check for reading
    time, with the file and line at hand; links out of the root are refused when opened (`inside`)."""
    if not isinstance(value, str) or not value:
        return "is not a relative path"
    if value.startswith(("/", "\\")) or ":" in value[:3]:
        return "is an absolute path"
    if ".." in re.split(r"[/\\]", value):
        return "climbs out of its root ('..')"
    if "\x00" in value:
        return "holds a NUL byte"
    return None
