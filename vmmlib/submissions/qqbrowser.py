"""QQ Browser 2021 submission: `result.zip` holding `result.json`, a JSON object video id → embedding.

The official baseline writes `{id: float16(embedding).tolist()}` as `result.json` and zips it
(ZIP_DEFLATED); the official `evaluate.py` opens the member named exactly `result.json` and
`util.test_spearmanr` scores it (SPEC §1.1, §2.1): every id of `label.tsv` must be present, each
vector at most 256-d. Checks here refuse, one problem line per kind, what that evaluator would
refuse or silently misread: a missing or misnamed member, an unreadable zip (bad CRC, corrupt
deflate data, encryption), invalid JSON, duplicate ids (JSON keeps the last), values that are not
lists of JSON numbers (strings, booleans, null, objects), NaN/inf, vectors of different lengths or
over 256-d, missing ids. The member is size-checked before reading and parsed one id at a time;
`validate` keeps no vectors (ids are counted by `_ids.IdCounter`, which spills to disk past 200k
ids), so memory stays bounded whatever the file holds: at the 512 MiB cap, well under 500 MB
(benchmarks/bench_validate_memory.py). A bare `result.json` (not zipped) is read the same way, for
local use.

No torch here: `vmm validate qqbrowser result.zip` answers in about a second.
"""

from __future__ import annotations

import codecs
import dataclasses
import json
import math
import re
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from vmmlib.io import safe
from vmmlib.io.safe import InputError
from vmmlib.submissions import InvalidSubmissionError
from vmmlib.submissions._ids import IdCounter

MEMBER = "result.json"  # the name the official evaluate.py opens
MAX_DIM = 256  # "NO MORE THAN 256" (baseline config.py)
MAX_MEMBER_BYTES = 512 << 20  # test_b (43,027 ids × 256 float16 values as JSON) is ~250 MB
MAX_VALUE_CHARS = 1 << 20  # one id's vector as text (256 values take ~6 KB)
CHUNK_BYTES = 1 << 20
DEFAULT_SPLIT = "test_a"


def write(path: str | Path, ids: list[str], embeddings: np.ndarray) -> Path:
    """Write `result.zip` in the official format: `result.json` = {id: float16-rounded list}.

    Args:
        ids: (N,) unique video ids.
        embeddings: (N, D) float, D ≤ 256; every value finite in float16.
    """
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or not 0 < embeddings.shape[1] <= MAX_DIM or len(ids) != len(embeddings):
        raise ValueError(f"embeddings must be (N={len(ids)}, ≤{MAX_DIM}), got {embeddings.shape}")
    if len(set(ids)) != len(ids):
        raise ValueError("ids repeat: each video gets one embedding")
    with np.errstate(over="ignore", invalid="ignore"):
        half = embeddings.astype(np.float16)
    bad = np.flatnonzero(~np.isfinite(half).all(axis=1))
    if len(bad):
        raise ValueError(
            f"{len(bad)} embedding(s) are not finite in float16 (|x| > 65504 or NaN), e.g. id {ids[bad[0]]}"
        )
    result = {str(vid): e.tolist() for vid, e in zip(ids, half)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MEMBER, json.dumps(result))
    return path


def read(path: str | Path) -> dict[str, np.ndarray]:
    """The embeddings of a valid `result.zip` (or bare `result.json`): {id: (D,) float64}.

    float64, as the official evaluator hands Python floats to sklearn. Raises
    InvalidSubmissionError (with the problem list) if the file's format is invalid.
    """
    embeddings, problems = load(path)
    if problems:
        raise InvalidSubmissionError(path, problems)
    return embeddings


def validate(path: str | Path, required_ids: Iterable[str] | None = None) -> list[str]:
    """Problems with a submission, one line each (empty: valid); `required_ids` None checks the format only.

    Streams: no vector is kept, so memory stays bounded at any size up to the member limit."""
    return _check(path, required_ids, MAX_MEMBER_BYTES, keep=False)[1]


def evaluate(pred: str | Path, truth: str | Path) -> dict[str, float]:
    """The official score against a `label.tsv`: {"spearman": ρ (NaN if undefined), "pairs": n}.

    Raises:
        InvalidSubmissionError: the file is invalid or lacks a pair's id (the official evaluator
            aborts on a missing id).
    """
    from vmmlib.metrics.qqbrowser import qq_spearman, read_label_tsv

    pairs = read_label_tsv(truth)
    if not pairs:
        raise InputError(truth, "no pairs to score")
    embeddings, problems = load(pred, _pair_ids(pairs))
    if problems:
        raise InvalidSubmissionError(pred, problems)
    return {"spearman": qq_spearman(embeddings, pairs), "pairs": len(pairs)}


def required_ids(
    *, truth: str | Path | None = None, data_dir: str | Path | None = None, split: str | None = None
) -> list[str] | None:
    """The ids a submission must cover: every video of a `label.tsv`'s pairs (`truth`), or of a data
    folder's split (default test_a); None when neither is given."""
    if truth:
        from vmmlib.metrics.qqbrowser import read_label_tsv

        return _pair_ids(read_label_tsv(truth))
    if data_dir:
        from vmmlib.data.qqbrowser.reader import split_files  # the reader module (imports torch)
        from vmmlib.io import read_examples

        split = split or DEFAULT_SPLIT
        files = split_files(data_dir, split)
        if not files:
            raise InputError(data_dir, f"no {split} records")
        return [r["id"][0].decode() for f in files for r in read_examples(f, keys=["id"])]
    return None


def _pair_ids(pairs) -> list[str]:
    return list(dict.fromkeys(v for query, candidate, _ in pairs for v in (query, candidate)))


# --------------------------------------------------------------------------- reading


def load(
    path: str | Path, required_ids: Iterable[str] | None = None, *, max_bytes: int = MAX_MEMBER_BYTES
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Parse a submission and check it: ({id: (D,) float64 embedding}, problems).

    Args:
        required_ids: ids that must be present (None: not checked).
        max_bytes: largest uncompressed `result.json` read.
    """
    return _check(path, required_ids, max_bytes, keep=True)


def _check(
    path: str | Path, required_ids: Iterable[str] | None, max_bytes: int, keep: bool
) -> tuple[dict[str, np.ndarray], list[str]]:
    """`load` (keep=True: the vectors too) or `validate` (keep=False: problems only, bounded memory)."""
    path = Path(path)
    if not path.is_file():
        return {}, [f"{path}: no such file"]
    required = None if required_ids is None else dict.fromkeys(required_ids)
    parser = None
    try:
        if zipfile.is_zipfile(path):
            with safe.open_zip(path, limits=_zip_limits()) as z:
                zf = z.handle()
                info, problems = _member(zf, max_bytes)
                if problems:
                    return {}, problems
                with zf.open(info) as stream:
                    parser = _Parser(stream, f"{path.name}:{MEMBER}", keep, required)
                    embeddings, problems = parser.parse()
        elif path.stat().st_size > max_bytes:
            return {}, [f"{path}: {path.stat().st_size} bytes, more than the {max_bytes}-byte limit"]
        else:
            with open(path, "rb") as stream:
                parser = _Parser(stream, path.name, keep, required)
                embeddings, problems = parser.parse()
    except InputError as e:
        return {}, [f"{path}: cannot read it ({e.where + ': ' if e.where else ''}{e.reason})"]
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as e:
        return {}, [f"{path}: cannot read it ({type(e).__name__}: {e})"]
    finally:
        if parser is not None:
            parser.ids.close()
    if required is not None:
        present = embeddings if keep else parser.found
        missing = [v for v in required if v not in present]
        if missing:
            problems.append(f"{len(missing)} required id(s) missing, e.g. {missing[0]}")
    return embeddings, problems


def _zip_limits() -> safe.Limits:
    """SafeZip judges member names and count; result.json's size is checked against the member
    limit here, and its ratio does not matter (an all-zero submission deflates ~1000:1)."""
    return dataclasses.replace(safe.DEFAULT_LIMITS, max_member_bytes=1 << 62, max_zip_ratio=float("inf"))


def _member(zf: zipfile.ZipFile, max_bytes: int) -> tuple[zipfile.ZipInfo | None, list[str]]:
    """The `result.json` entry, checked before any byte of it is read."""
    infos = [i for i in zf.infolist() if i.filename == MEMBER]
    if not infos:
        found = ", ".join(repr(n) for n in zf.namelist()[:5]) or "nothing"
        return None, [
            f"the zip holds no member named {MEMBER!r} (found {found}); the official evaluator opens {MEMBER}"
        ]
    info = infos[0]
    if len(infos) > 1:
        return None, [f"{MEMBER} appears {len(infos)} times in the zip"]
    if info.flag_bits & 0x1:
        return None, [f"{MEMBER} is encrypted"]
    if info.file_size > max_bytes:
        return None, [
            f"{MEMBER} is {info.file_size} bytes uncompressed, more than the {max_bytes}-byte limit"
        ]
    return info, []


_NUMBERS = {int, float}  # what json gives for JSON numbers
_WHITESPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace
_KINDS = {str: "a string", bool: "a boolean", type(None): "null", list: "an array", dict: "an object"}


class _Parser:
    """Streams `{"id": [numbers], ...}` one member at a time (`json.JSONDecoder.raw_decode` per value),
    collecting one problem line per kind of defect with a count and a first example.

    keep=True stores every vector (`load`, `read`, `evaluate`); keep=False (`validate`) stores none:
    ids go to an `IdCounter` (exact repeats in bounded memory), lengths to one example id each, and
    the required ids seen to `found`."""

    def __init__(self, stream, name: str, keep: bool = True, required: dict | None = None):
        self.stream, self.name, self.keep, self.required = stream, name, keep, required
        self.text = codecs.getincrementaldecoder("utf-8-sig")()
        self.buf, self.base, self.eof = "", 0, False
        self.decoder = json.JSONDecoder()
        self.embeddings: dict[str, np.ndarray] = {}
        self.defects: dict[str, list] = {}  # kind -> [count, first example, event of the first]
        self.events = 0  # values seen so far
        self.ids = IdCounter()
        self.lengths: dict[int, str] = {}  # keep=False: vector length -> first id with it
        self.found: set[str] = set()  # keep=False: required ids with a valid vector

    def _fill(self) -> None:
        chunk = self.stream.read(CHUNK_BYTES)
        self.eof = not chunk
        self.buf += self.text.decode(chunk, final=self.eof)

    def _skip(self, pos: int) -> int:
        """Position of the next non-whitespace character (reading on as needed); len(buf) at EOF."""
        while True:
            pos = _WHITESPACE.match(self.buf, pos).end()
            if pos < len(self.buf) or self.eof:
                return pos
            self.buf, self.base, pos = "", self.base + pos, 0  # all consumed: keep memory flat
            self._fill()

    def _value(self, pos: int):
        """(value, end) of the JSON value at pos, reading on until it is complete."""
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, pos)
                if end < len(self.buf) or self.eof:  # a number at the buffer's end may go on
                    return value, end
            except json.JSONDecodeError as e:
                if self.eof:
                    raise ValueError(f"invalid JSON at character {self.base + e.pos}: {e.msg}") from None
            if len(self.buf) - pos > MAX_VALUE_CHARS:
                raise ValueError(
                    f"a value at character {self.base + pos} is over {MAX_VALUE_CHARS} characters"
                )
            self._fill()

    def _note(self, kind: str, example: str, event: int) -> None:
        self.defects.setdefault(kind, [0, example, event])[0] += 1

    def parse(self) -> tuple[dict[str, np.ndarray], list[str]]:
        try:
            self._members()
        except UnicodeDecodeError as e:
            return self._failed(f"{self.name}: not UTF-8 text ({e.reason} near byte {e.start})")
        except ValueError as e:
            return self._failed(f"{self.name}: {e}")
        except RecursionError:
            return self._failed(f"{self.name}: arrays or objects nested too deeply to be a vector")
        if not self.keep:
            self._note_repeats()
        return self.embeddings, self._problems()

    def _failed(self, problem: str) -> tuple[dict, list[str]]:
        self.found = set()
        return {}, [problem]

    def _note_repeats(self) -> None:
        """keep=False: the duplicate defect from the id counts (count of repeats, earliest repeat)."""
        total, earliest = 0, None
        for c in self.ids.counts(repeated_only=True):
            if c.repeats:
                total += c.repeats
                earliest = min(earliest or (c.repeat, c.key), (c.repeat, c.key))
        if total:
            self.defects["duplicate"] = [total, earliest[1], earliest[0]]

    def _members(self) -> None:
        pos = self._skip(0)
        if self.buf[pos : pos + 1] != "{":
            kind = "nothing" if pos >= len(self.buf) else _KINDS.get(type(self._value(pos)[0]), "a number")
            raise ValueError(f"the JSON must be an object id → embedding, got {kind}")
        pos = self._skip(pos + 1)
        while self.buf[pos : pos + 1] != "}":  # {} is valid (and then lacks every required id)
            if self.buf[pos : pos + 1] != '"':
                raise ValueError(f"invalid JSON at character {self.base + pos}: expecting a quoted id")
            key, pos = self._value(pos)
            pos = self._skip(pos)
            if self.buf[pos : pos + 1] != ":":
                raise ValueError(f"invalid JSON at character {self.base + pos}: expecting ':'")
            value, pos = self._value(self._skip(pos + 1))
            self._add(key, value)
            pos = self._skip(pos)
            if self.buf[pos : pos + 1] == "}":
                break
            if self.buf[pos : pos + 1] != ",":
                raise ValueError(f"invalid JSON at character {self.base + pos}: expecting ',' or '}}'")
            pos = self._skip(pos + 1)
            if self.buf[pos : pos + 1] == "}":
                raise ValueError(f"invalid JSON at character {self.base + pos}: a ',' before '}}'")
            if pos > CHUNK_BYTES:  # drop what has been parsed: the buffer stays ~1 chunk long
                self.buf, self.base, pos = self.buf[pos:], self.base + pos, 0
        end = self._skip(pos + 1)
        if end < len(self.buf):
            raise ValueError(f"extra data after the JSON object at character {self.base + end}")

    def _add(self, key: str, value) -> None:
        event, self.events = self.events, self.events + 1
        if self.keep and key in self.embeddings:
            self._note("duplicate", key, event)
        vector = self._vector(key, value, event)
        if self.keep:
            if vector is not None:
                self.embeddings[key] = vector
            return
        self.ids.add(key, valid=vector is not None)
        if vector is not None:
            self.lengths.setdefault(len(vector), key)
            if self.required is not None and key in self.required:
                self.found.add(key)

    def _vector(self, key: str, value, event: int) -> np.ndarray | list | None:
        """The value as a float64 vector, or None (noted) if it is not a list of numbers."""
        if not isinstance(value, list):
            kind = f"holds {_KINDS.get(type(value), 'a number')} in place of a list of numbers"
            self._note(kind, key, event)
            return None
        if not set(map(type, value)) <= _NUMBERS:  # bool is not a number here, nor "1.0"
            wrong = next(x for x in value if type(x) not in _NUMBERS)
            self._note(
                f"holds {_KINDS.get(type(wrong), 'an unknown value')} in place of a number", key, event
            )
            return None
        if not self.keep:  # validate: only the length and finiteness matter, numpy costs more per id
            try:
                finite = all(map(math.isfinite, value))
            except OverflowError:  # an integer beyond float range
                finite = False
            if not finite:
                self._note("nonfinite", key, event)
            return value
        try:
            vector = np.array(value, np.float64)
        except OverflowError:  # an integer beyond float range
            vector = np.full(len(value), np.inf)
        if not np.isfinite(vector).all():
            self._note("nonfinite", key, event)
        return vector

    def _problems(self) -> list[str]:
        problems = []
        order = sorted(self.defects.items(), key=lambda kv: (kv[1][2], kv[0] != "duplicate"))
        for kind, (count, example, _) in order:
            if kind == "duplicate":
                problems.append(f"{count} id(s) appear more than once (JSON keeps the last), e.g. {example}")
            elif kind == "nonfinite":
                problems.append(f"{count} embedding(s) hold NaN or inf, e.g. id {example}")
            else:
                problems.append(f"{count} value(s) {kind}, e.g. id {example}")
        lengths = self.lengths
        if self.keep:
            lengths = {}
            for key, vector in self.embeddings.items():
                lengths.setdefault(len(vector), key)
        if len(lengths) > 1:
            shown = ", ".join(f"{n} (id {k})" for n, k in sorted(lengths.items())[:3])
            problems.append(f"embeddings have different lengths: {shown}")
        for n, key in sorted(lengths.items()):
            if not 0 < n <= MAX_DIM:
                problems.append(
                    f"an embedding has {n} values (id {key}); each must be a list of 1..{MAX_DIM} numbers"
                )
        return problems
