"""The hostile corpus: for each file kind, the mutations a hostile or careless user brings.

`MUTATIONS[kind]` is a list of `(name, fn(target, made_root) -> None)`; `fn` changes the file (or
folder) at `target` in place. A mutation that cannot apply to this particular file (a CSV without a
numeric field, a JSON without a path-valued string) raises `NotApplicable`; the case then counts as
"n/a", not as a pass. Every file built here is small (at most a few MiB) so the whole corpus runs
in seconds; limits are hit because the runner lowers them (`TEST_LIMITS`), not because files are big.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vmmlib.io.safe import Limits

Mutation = Callable[[Path, Path], None]

# The limits every entry runs under during the hostile test: small enough for a small corpus to
# cross them, large enough for every valid sample input.
TEST_LIMITS = Limits(
    max_text_bytes=64 << 20,
    max_line_bytes=1 << 20,
    max_member_bytes=64 << 20,
    max_array_bytes=256 << 20,
    max_image_pixels=50_000_000,
)
HUGE_LINE_BYTES = 2 << 20  # over TEST_LIMITS.max_line_bytes
ZIP_BOMB_BYTES = 32 << 20  # one member of zeros, ~1000:1
DEEP = 100_000  # nesting of deep_json

# Mutations where either outcome passes unless the entry's `handled` says which: safe.py drops a
# leading BOM, while a format whose official reader keeps it in the first field refuses it by name.
DEFAULT_HANDLED = {
    "bom": "a leading UTF-8 BOM is dropped (safe.read_text / safe.iter_lines), or refused by name"
}
TEXT_KINDS = ("json", "jsonl", "csv", "tsv", "text", "yaml")


class NotApplicable(Exception):
    """This mutation has nothing to change in this file."""


# ------------------------------------------------------------------------------------ any file kind


def truncated(target: Path, root: Path) -> None:
    data = _file_bytes(target)
    if len(data) < 2:
        raise NotApplicable("file too short to truncate")
    # cut inside a line, away from its ends: a truncated record, not a shorter valid file
    cut = len(data) // 2
    while cut < len(data) - 1 and (
        data[cut - 1 : cut] in (b"\n", b"\r") or data[cut : cut + 1] in (b"\n", b"\r")
    ):
        cut += 1
    target.write_bytes(data[:cut])


def empty(target: Path, root: Path) -> None:
    _file_bytes(target)
    target.write_bytes(b"")


def directory(target: Path, root: Path) -> None:
    _remove(target)
    target.mkdir()
    (target / "inner.txt").write_text("not a file\n")


def garbage(target: Path, root: Path) -> None:
    size = max(len(_file_bytes(target)), 64)
    rng = random.Random(16)
    target.write_bytes(bytes(rng.getrandbits(8) for _ in range(min(size, 4096))))


def symlink_out(target: Path, root: Path) -> None:
    """The file becomes a link to a copy of itself outside the data's root."""
    outside = _outside(root) / target.name
    if target.is_dir() and not target.is_symlink():
        shutil.copytree(target, outside, symlinks=True)
    else:
        outside.write_bytes(_file_bytes(target))
    _remove(target)
    target.symlink_to(outside)


COMMON: list[tuple[str, Mutation]] = [
    ("truncated", truncated),
    ("empty", empty),
    ("directory", directory),
    ("garbage", garbage),
    ("symlink_out", symlink_out),
]

# ------------------------------------------------------------------------------------------- text


def non_utf8(target: Path, root: Path) -> None:
    data = _file_bytes(target)
    lines = data.split(b"\n")
    # into the middle of the last non-blank line: inside a value, after any header
    i = max((k for k, line in enumerate(lines) if line.strip()), default=0)
    line = lines[i]
    mid = _inside_value(line)
    lines[i] = line[:mid] + b"\xff\xfe" + line[mid:]
    target.write_bytes(b"\n".join(lines))


def bom(target: Path, root: Path) -> None:
    target.write_bytes(b"\xef\xbb\xbf" + _file_bytes(target))


def huge_line(target: Path, root: Path) -> None:
    data = _file_bytes(target)
    first, sep, rest = data.partition(b"\n")
    target.write_bytes(first + b"\n" + b"x" * HUGE_LINE_BYTES + b"\n" + rest)


def duplicate_row(target: Path, root: Path) -> None:
    """csv/tsv/text: the last non-blank row again at the end (same id twice)."""
    lines = [line for line in _file_bytes(target).splitlines() if line.strip()]
    if len(lines) < 2:
        raise NotApplicable("fewer than two rows (a header and a row)")
    target.write_bytes(b"\n".join([*lines, lines[-1]]) + b"\n")


def wrong_types_row(target: Path, root: Path) -> None:
    """csv/tsv: every numeric field of the last row becomes a word."""
    delim = _delimiter(target)
    lines = _file_bytes(target).decode("utf-8").splitlines()
    i = max(k for k, line in enumerate(lines) if line.strip())
    fields = lines[i].split(delim)
    changed = [("abc" if _is_number(f) else f) for f in fields]
    if changed == fields:
        raise NotApplicable("no numeric field in the last row")
    lines[i] = delim.join(changed)
    target.write_text("\n".join(lines) + "\n")


def non_finite_row(target: Path, root: Path) -> None:
    """csv/tsv: the last numeric field of the last row becomes nan."""
    delim = _delimiter(target)
    lines = _file_bytes(target).decode("utf-8").splitlines()
    i = max(k for k, line in enumerate(lines) if line.strip())
    fields = lines[i].split(delim)
    numeric = [k for k, f in enumerate(fields) if _is_number(f) and not f.strip().isdigit()]
    numeric = numeric or [k for k, f in enumerate(fields) if _is_number(f)]
    if not numeric:
        raise NotApplicable("no numeric field in the last row")
    fields[numeric[-1]] = "nan"
    lines[i] = delim.join(fields)
    target.write_text("\n".join(lines) + "\n")


def _path_in_text(target: Path, root: Path, absolute: bool) -> None:
    text = _file_bytes(target).decode("utf-8")
    for token in sorted(set(_tokens(text)), key=len, reverse=True):
        hit = _existing(token, target, root)
        if hit is not None:
            target.write_text(text.replace(token, _escape_to(hit, root, absolute)))
            return
    raise NotApplicable("no field names a file of the input")


def path_climb(target: Path, root: Path) -> None:
    """A path-valued field becomes `../../outside/<name>` (a copy of the real file waits there)."""
    _path_mutation(target, root, absolute=False)


def path_absolute(target: Path, root: Path) -> None:
    """A path-valued field becomes an absolute path outside the root (a copy waits there)."""
    _path_mutation(target, root, absolute=True)


def _path_mutation(target: Path, root: Path, absolute: bool) -> None:
    if _kind_of(target) in ("json", "jsonl", "yaml"):
        _path_in_json(target, root, absolute)
    else:
        _path_in_text(target, root, absolute)


# ------------------------------------------------------------------------------------------- JSON


def deep_json(target: Path, root: Path) -> None:
    """The document (or the first record of a JSONL file) nested 100k deep."""
    deep = "[" * DEEP + "]" * DEEP
    if _kind_of(target) == "jsonl":
        lines = _file_bytes(target).decode("utf-8").splitlines()
        target.write_text("\n".join([deep, *lines[1:]]) + "\n")
    else:
        target.write_text(deep)


def wrong_types(target: Path, root: Path) -> None:
    """Every field of the first record (or each value of a top-level mapping) gets the wrong type."""

    def spoil(records: Any) -> Any:
        if isinstance(records, dict):
            return {k: _wrong(v) for k, v in records.items()}
        if isinstance(records, list) and records:
            first = records[0]
            first = {k: _wrong(v) for k, v in first.items()} if isinstance(first, dict) else _wrong(first)
            return [first, *records[1:]]
        return _wrong(records)

    _edit_json(target, spoil, first_only=True)


def non_finite(target: Path, root: Path) -> None:
    """The first float of the document (or first record) becomes 1e39 (inf as float32) — or NaN."""
    text = _file_bytes(target).decode("utf-8")
    match = re.search(r"(?<![\w.\"])-?\d+\.\d+(?:[eE][-+]?\d+)?(?![\w\"])", text)
    if match is None:
        raise NotApplicable("no float in the document")
    target.write_text(text[: match.start()] + "NaN" + text[match.end() :])


def duplicate_ids(target: Path, root: Path) -> None:
    """JSON: the first key of a mapping written twice, or a list's first item repeated; JSONL: the
    first record again at the end; CSV/TSV/text: the last row again."""
    kind = _kind_of(target)
    if kind in ("csv", "tsv", "text"):
        return duplicate_row(target, root)
    if kind == "jsonl":
        lines = [line for line in _file_bytes(target).decode("utf-8").splitlines() if line.strip()]
        if not lines:
            raise NotApplicable("no record")
        target.write_text("\n".join([*lines, lines[0]]) + "\n")
        return
    value = json.loads(_file_bytes(target).decode("utf-8"))
    if isinstance(value, dict) and value:
        key, item = next(iter(value.items()))
        body = ", ".join(json.dumps(k) + ": " + json.dumps(v) for k, v in value.items())
        target.write_text("{" + json.dumps(key) + ": " + json.dumps(item) + ", " + body + "}")
    elif isinstance(value, list) and value:
        target.write_text(json.dumps([*value, value[0]]))
    else:
        raise NotApplicable("neither a mapping nor a list of records")


# -------------------------------------------------------------------------------------------- zip


def zip_bomb(target: Path, root: Path) -> None:
    """The first file member replaced by 32 MiB of zeros deflated (~1000:1)."""
    members = _zip_members(target)
    if not members:
        raise NotApplicable("no member")
    name = next((n for n, _ in members if not n.endswith("/")), members[0][0])
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as z:
        for n, data in members:
            if n == name:
                with z.open(n, "w", force_zip64=True) as f:
                    chunk = bytes(1 << 20)
                    for _ in range(ZIP_BOMB_BYTES >> 20):
                        f.write(chunk)
            else:
                z.writestr(n, data)


def zip_slip(target: Path, root: Path) -> None:
    """A member named `../../escaped.txt` added (extracting it would write outside)."""
    members = _zip_members(target)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as z:
        for n, data in members:
            z.writestr(n, data)
        z.writestr("../../escaped.txt", b"written outside\n")


# -------------------------------------------------------------------------------------------- npy


def npy_huge_shape(target: Path, root: Path) -> None:
    """The header declares (2**40, 768) float32 (3 PB); the data stays as it was."""
    _npy_with_header(target, "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 768), }")


def npy_object(target: Path, root: Path) -> None:
    """An object-dtype array: loading it would unpickle."""
    _npy_with_header(target, "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }")


def _npy_with_header(target: Path, header: str) -> None:
    data = _file_bytes(target)
    if not data.startswith(b"\x93NUMPY"):
        raise NotApplicable("not an npy file")
    body = header.encode("latin1")
    pad = 64 - (10 + len(body) + 1) % 64
    head = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body) + pad + 1) + body + b" " * pad + b"\n"
    hlen = struct.unpack("<H", data[8:10])[0]
    target.write_bytes(head + data[10 + hlen :])


# ------------------------------------------------------------------------------------------ image


def image_bomb(target: Path, root: Path) -> None:
    """The header declares 20000×20000 pixels (1.2 GB decoded); the file stays small."""
    data = bytearray(_file_bytes(target))
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        struct.pack_into(">II", data, 16, 20000, 20000)
        struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    elif data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                raise NotApplicable("JPEG markers not understood")
            marker, length = data[i + 1], struct.unpack(">H", data[i + 2 : i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                struct.pack_into(">HH", data, i + 5, 20000, 20000)
                break
            i += 2 + length
        else:
            raise NotApplicable("no JPEG frame header")
    else:
        raise NotApplicable("neither PNG nor JPEG")
    target.write_bytes(bytes(data))


# --------------------------------------------------------------------------------------- tfrecord


def tfrecord_huge_length(target: Path, root: Path) -> None:
    """The first record declares 2**40 bytes, with a correct length checksum."""
    from vmmlib.io.tfrecord import masked_crc32c

    data = bytearray(_file_bytes(target))
    if len(data) < 12:
        raise NotApplicable("no record")
    length = struct.pack("<Q", 1 << 40)
    data[0:12] = length + struct.pack("<I", masked_crc32c(length))
    target.write_bytes(bytes(data))


# ----------------------------------------------------------------------------------------- tables

_TEXT = [("non_utf8", non_utf8), ("bom", bom), ("huge_line", huge_line)]
_PATHS = [("path_climb", path_climb), ("path_absolute", path_absolute)]

MUTATIONS: dict[str, list[tuple[str, Mutation]]] = {
    "json": [
        *COMMON,
        *_TEXT,
        ("deep_json", deep_json),
        ("wrong_types", wrong_types),
        ("non_finite", non_finite),
        ("duplicate_ids", duplicate_ids),
        *_PATHS,
    ],
    "jsonl": [
        *COMMON,
        *_TEXT,
        ("deep_json", deep_json),
        ("wrong_types", wrong_types),
        ("non_finite", non_finite),
        ("duplicate_ids", duplicate_ids),
        *_PATHS,
    ],
    "yaml": [*COMMON, *_TEXT, ("deep_json", deep_json), ("wrong_types", wrong_types), *_PATHS],
    "csv": [
        *COMMON,
        *_TEXT,
        ("wrong_types", wrong_types_row),
        ("non_finite", non_finite_row),
        ("duplicate_ids", duplicate_ids),
        *_PATHS,
    ],
    "tsv": [
        *COMMON,
        *_TEXT,
        ("wrong_types", wrong_types_row),
        ("non_finite", non_finite_row),
        ("duplicate_ids", duplicate_ids),
        *_PATHS,
    ],
    "text": [*COMMON, *_TEXT, ("duplicate_ids", duplicate_ids), *_PATHS],
    "zip": [*COMMON, ("zip_bomb", zip_bomb), ("zip_slip", zip_slip)],
    "npy": [*COMMON, ("npy_huge_shape", npy_huge_shape), ("npy_object", npy_object)],
    "image": [*COMMON, ("image_bomb", image_bomb)],
    "tfrecord": [*COMMON, ("tfrecord_huge_length", tfrecord_huge_length)],
}

# Mutations that only make sense on a real file (not on a member inside a zip).
FILE_ONLY = {"directory", "symlink_out"}


# ---------------------------------------------------------------------------------------- helpers


def _file_bytes(target: Path) -> bytes:
    if not target.is_file():
        raise NotApplicable("target is not a file")
    return target.read_bytes()


def _remove(target: Path) -> None:
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    else:
        target.unlink()


def _outside(root: Path) -> Path:
    """A folder beside the made root (outside it), created on demand."""
    out = root.resolve().parent / "outside"
    out.mkdir(exist_ok=True)
    return out


_SUFFIX_KIND = {
    ".json": "json",
    ".jsonl": "jsonl",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".csv": "csv",
    ".tsv": "tsv",
}
KIND_HINT: dict[str, str] = {}  # set by the runner: target path -> kind, for files whose suffix says nothing


def _kind_of(target: Path) -> str:
    return KIND_HINT.get(os.fspath(target)) or _SUFFIX_KIND.get(target.suffix.lower(), "text")


def _delimiter(target: Path) -> str:
    return "\t" if _kind_of(target) == "tsv" else ","


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return bool(text.strip())


def _inside_value(line: bytes) -> int:
    """A byte offset inside a value of the line: after the first quote or field separator."""
    for sep in (b'"', b"\t", b","):
        k = line.find(sep)
        if 0 <= k < len(line) - 1:
            return k + 1
    return len(line) // 2


def _wrong(value: Any) -> Any:
    if isinstance(value, bool):
        return "true"
    if isinstance(value, str):
        return 12345
    if isinstance(value, (int, float)):
        return "1.5x"
    if isinstance(value, list):
        return {"a": 1}
    if isinstance(value, dict):
        return ["a"]
    return []


def _edit_json(target: Path, edit: Callable[[Any], Any], first_only: bool = False) -> None:
    text = _file_bytes(target).decode("utf-8")
    kind = _kind_of(target)
    if kind == "jsonl":
        lines = text.splitlines()
        first = next(k for k, line in enumerate(lines) if line.strip())
        lines[first] = json.dumps(edit(json.loads(lines[first])))
        target.write_text("\n".join(lines) + "\n")
    elif kind == "yaml":
        import yaml

        target.write_text(yaml.safe_dump(edit(yaml.safe_load(text))))
    else:
        target.write_text(json.dumps(edit(json.loads(text))))


def _tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[\s,\t\"'{}\[\]:;=]+", text) if t and ("." in t or "/" in t)]


def _existing(token: str, target: Path, root: Path) -> tuple[Path, Path] | None:
    """(the file `token` names, the folder it is relative to), if it names a file of the input."""
    if "\x00" in token or len(token) > 1000:
        return None
    for base in (target.parent, root if root.is_dir() else root.parent):
        p = Path(base) / token
        try:
            if p.exists() and p.resolve() != target.resolve():
                return p, Path(base)
        except OSError:
            continue
    return None


def _escape_to(found: tuple[Path, Path], root: Path, absolute: bool) -> str:
    """A path to a copy of the file outside the root: absolute, or climbing from the token's base."""
    real, base = found
    copy = _outside(root) / real.name
    if not copy.exists():
        if real.is_dir():
            shutil.copytree(real, copy, symlinks=True)
        else:
            shutil.copyfile(real, copy)
    return os.fspath(copy) if absolute else os.path.relpath(copy, base)


def _path_in_json(target: Path, root: Path, absolute: bool) -> None:
    found: list[Path] = []

    def edit(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: edit(v) for k, v in value.items()}
        if isinstance(value, list):
            return [edit(v) for v in value]
        if isinstance(value, str) and not found:
            hit = _existing(value, target, root) if ("/" in value or "." in value) else None
            if hit is not None:
                found.append(hit[0])
                return _escape_to(hit, root, absolute)
        return value

    text = _file_bytes(target).decode("utf-8")
    kind = _kind_of(target)
    if kind == "jsonl":
        lines = text.splitlines()
        out = [json.dumps(edit(json.loads(line))) if line.strip() and not found else line for line in lines]
        new = "\n".join(out) + "\n"
    elif kind == "yaml":
        import yaml

        new = yaml.safe_dump(edit(yaml.safe_load(text)))
    else:
        new = json.dumps(edit(json.loads(text)))
    if not found:
        raise NotApplicable("no string names a file of the input")
    target.write_text(new)


def _zip_members(target: Path) -> list[tuple[str, bytes]]:
    _file_bytes(target)
    with zipfile.ZipFile(target) as z:
        return [(i.filename, z.read(i)) for i in z.infolist()]


def apply_to_member(
    mutate: Mutation, zip_path: Path, member: str, root: Path, scratch: Path, kind: str
) -> None:
    """Run `mutate` on one member of a zip (extracted to `scratch`), then write the zip back."""
    members = _zip_members(zip_path)
    names = [n for n, _ in members]
    if member not in names:
        raise NotApplicable(f"no member {member!r}")
    scratch.mkdir(parents=True, exist_ok=True)
    tmp = scratch / Path(member).name
    tmp.write_bytes(dict(members)[member])
    KIND_HINT[os.fspath(tmp)] = kind
    mutate(tmp, root)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
        for n, data in members:
            z.writestr(n, tmp.read_bytes() if n == member else data)
