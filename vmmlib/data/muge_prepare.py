"""`vmm prepare muge DATA_DIR`: MUGE's TSV + JSONL files → Chinese-CLIP's LMDB layout (SPEC §1.3, §9.2).

    DATA_DIR/{split}_imgs.tsv      image_id \\t base64(image file)     (standard or url-safe alphabet)
    DATA_DIR/{split}_texts.jsonl   {"text_id": int, "text": str, "image_ids": [int, ...]}
      → DATA_DIR/lmdb/{split}/imgs, DATA_DIR/lmdb/{split}/pairs   (`vmmlib.io.lmdb_store` layout)

What Chinese-CLIP's `build_lmdb_dataset` does not, and this does:

- every image is checked: its base64 must decode (either alphabet) and Pillow must decode the
  result (`check="decode"`; JPEG at 1/8 scale, which still reads every entropy-coded byte), or, at
  a fraction of the cost, `check="fast"`: every base64 character validated, the file signature
  (JPEG, PNG, GIF; other formats: the header, parsed by Pillow) and the end-of-image marker present
  (truncation caught, corrupt entropy data not; as fast as Chinese-CLIP's unchecked builder,
  `benchmarks/bench_muge.py prepare`). `workers`
  processes check in parallel; writing stays in file order. A bad line is reported with its file and line number and skipped (`on_error="skip"`) or raises
  (`"raise"`); the summary counts it. Nothing is dropped silently: a pair whose image was skipped
  or is absent from the TSV is counted and reported too (upstream would store it and crash on read).
- images are stored first, pairs second, so only pairs whose image exists are written.
- resumable: progress (byte offsets, counts, entries, the first errors) is committed with every
  LMDB transaction into `lmdb/{split}/vmm_prepare.json`; a rerun continues where it stopped, and a
  finished split whose source files are unchanged is skipped. Changed sources start over. Commits
  are flushed to disk once per stage, not each (a killed process loses nothing); should a machine
  crash roll the LMDB back behind the recorded entries, the rerun starts the split over.
- a stale LMDB is removed before a fresh build (reopening one keeps its old keys).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from vmmlib.io.lmdb_store import (
    NUM_IMAGES_KEY,
    NUM_SAMPLES_KEY,
    decode_base64,
    dumps_pair,
    open_env,
    put_batch,
)

SPLITS = ("train", "valid", "test")
CHECKS = ("decode", "fast", "header", "none")
ON_ERROR = ("skip", "raise")
STATE_FILE = "vmm_prepare.json"
STATE_VERSION = 1
MAX_REPORTED = 50  # error messages kept in the summary; every one is counted


class MugeDataError(ValueError):
    """A malformed line in a MUGE source file (with `on_error="raise"`)."""


@dataclass
class PrepareSummary:
    """What `prepare_muge` did for one split. Counts cover the whole split, across resumed runs."""

    split: str
    images: int = 0  # distinct images stored
    pairs: int = 0  # (image, text) pairs stored
    texts: int = 0  # query lines read
    bad_images: int = 0  # image lines skipped: malformed line, bad base64 or undecodable image
    duplicate_images: int = 0  # image ids seen again (the last line wins, as in LMDB)
    bad_texts: int = 0  # query lines skipped: not JSON or missing/invalid fields
    pairs_without_image: int = 0  # pairs dropped because their image is not stored
    errors: list[str] = field(default_factory=list)  # "file:line: reason", the first MAX_REPORTED
    skipped: bool = False  # True: the split was already prepared from these exact files
    seconds: float = 0.0

    @property
    def problems(self) -> int:
        return self.bad_images + self.bad_texts + self.pairs_without_image


def split_files(data_dir: str | Path, split: str) -> tuple[Path, Path]:
    """The `{split}_imgs.tsv` and `{split}_texts.jsonl` of a split."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid choices: {', '.join(SPLITS)}")
    root = Path(data_dir)
    return root / f"{split}_imgs.tsv", root / f"{split}_texts.jsonl"


def _has_end_marker(raw: bytes, image_format: str | None) -> bool:
    tail = raw[-64:].rstrip(b"\x00")  # some encoders pad after the end marker
    if image_format == "JPEG":
        return tail.endswith(b"\xff\xd9")
    if image_format == "PNG":
        return b"IEND" in raw[-12:]
    if image_format == "GIF":
        return tail.endswith(b"\x3b")
    return True


def check_image(raw: bytes, check: str = "decode") -> None:
    """Raise if `raw` is not an image Pillow can read.

    Args:
        check: "decode" (decode it; JPEG at 1/8 scale, which still reads every entropy-coded byte, so
            truncation anywhere is caught), "fast" (header, plus the end-of-image marker of JPEG, PNG
            and GIF: catches truncation, not corrupted data, at a few µs), "header" (format and size
            only) or "none".
    """
    if check == "none":
        return
    with Image.open(io.BytesIO(raw)) as image:
        if check == "decode":
            image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))  # JPEG only
            image.load()
        elif check == "fast" and not _has_end_marker(raw, image.format):
            raise ValueError(f"{image.format} data without its end-of-image marker: truncated")


def _fingerprint(paths: Sequence[Path]) -> dict[str, list[int]]:
    return {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in paths}


def _write_state(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, ensure_ascii=False))
    os.replace(tmp, path)


def _iter_lines(path: Path, offset: int) -> Iterator[tuple[int, bytes]]:
    """(byte offset after the line, raw line) from `offset` on."""
    with open(path, "rb") as f:
        f.seek(offset)
        for line in f:
            offset += len(line)
            yield offset, line


class _Stage:
    """Shared bookkeeping of the image and pair passes: errors, commits, resume state."""

    def __init__(self, state: dict, stage: str, state_path: Path, on_error: str):
        self.state, self.stage, self.state_path, self.on_error = state, stage, state_path, on_error
        self.progress = state.setdefault(stage, {"offset": 0, "line": 0, "done": False})

    def error(self, path: Path, line_no: int, reason: str, counter: str) -> None:
        message = f"{path}:{line_no}: {reason}"
        if self.on_error == "raise":
            raise MugeDataError(message)
        counts = self.state["counts"]
        counts[counter] = counts.get(counter, 0) + 1
        if len(self.state["errors"]) < MAX_REPORTED:
            self.state["errors"].append(message)
        warnings.warn(message, stacklevel=3)

    def note(self, message: str) -> None:
        """Report something kept (not an error): listed with the errors, never raised."""
        if len(self.state["errors"]) < MAX_REPORTED:
            self.state["errors"].append(message)
        warnings.warn(message, stacklevel=3)

    def commit(self, env, puts: list, offset: int, line_no: int) -> None:
        put_batch(env, puts)
        puts.clear()
        self.progress.update(offset=offset, line=line_no, entries=env.stat()["entries"])
        _write_state(self.state_path, self.state)

    def finish(self, env) -> None:
        """Flush the environment to disk, then mark the stage done."""
        env.sync(True)
        self.progress.update(done=True, entries=env.stat()["entries"])
        _write_state(self.state_path, self.state)


_WHITESPACE = b" \t\r\n\x0b\x0c"


def _split_plain(raw: bytes) -> tuple[str, bytes] | None:
    """(image id, base64) of a line `id<TAB>base64<newline>` with no other white space around them and
    an ASCII id, sliced once; None for anything else (the general path then parses or reports it)."""
    tab = raw.find(b"\t")
    end = len(raw)
    while end > tab + 1 and raw[end - 1] in _WHITESPACE:
        end -= 1
    if tab <= 0 or end == tab + 1 or raw[0] in _WHITESPACE or raw.find(b"\t", tab + 1, end) >= 0:
        return None
    head = raw[:tab]
    if not head.isascii() or head[-1] in _WHITESPACE:
        return None
    return head.decode("ascii"), raw[tab + 1 : end]


def _parsed_batches(tsv: Path, start: int, line_no: int, size: int) -> Iterator[list[tuple]]:
    """Lines from byte `start` on, `size` per batch, as (line_no, offset after, image_id, base64 bytes
    or None, problem or None); blank lines are dropped. The base64 text stays bytes (no copy to str)."""
    batch = []
    for offset, raw in _iter_lines(tsv, start):
        line_no += 1
        fast = _split_plain(raw)
        if fast is not None:  # the common line: one copy of the base64 text, not three
            batch.append((line_no, offset, *fast, None))
            if len(batch) >= size:
                yield batch
                batch = []
            continue
        line = raw.strip()
        if line:
            parts = line.split(b"\t")
            try:
                image_id = parts[0].decode("utf-8")
            except UnicodeDecodeError:
                image_id = ""
            if len(parts) != 2 or not image_id:
                problem = f"expected 'image_id<TAB>base64' with a UTF-8 id, got {len(parts)} field(s)"
                batch.append((line_no, offset, None, None, problem))
            else:
                batch.append((line_no, offset, image_id, parts[1], None))
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


_B64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_"
HEAD_CHARS = 1 << 13  # base64 characters decoded for a header check (6 KiB of image; longer: all of it)


SIGNATURE_CHARS = 16  # base64 characters decoded for the file signature (12 bytes)
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
)


def _signature(head: bytes) -> str | None:
    """The format whose magic number `head` starts with (JPEG, PNG, GIF), else None."""
    return next((name for magic, name in _SIGNATURES if head.startswith(magic)), None)


def check_encoded(b64: bytes, check: str = "decode") -> None:
    """Raise if base64 text (either alphabet) is not an image (`check` as in `check_image`).

    "fast" and "header" validate every character but decode only the head (and, for "fast", the
    tail) of the text, so their cost barely grows with the image; a header longer than the head
    falls back to decoding the whole. "fast" reads the file signature itself for JPEG, PNG and GIF
    (magic number, then the end-of-image marker: no header parse) and asks Pillow for the rest.
    """
    if check == "none":
        return
    if check == "decode":
        return check_image(decode_base64(b64), check)
    pad = len(b64) - len(b64.rstrip(b"=")) if b64[-1:] == b"=" else 0
    # what is left after deleting the alphabets must be the trailing padding alone (no copy of the text)
    if b64.translate(None, _B64_CHARS) != b"=" * pad or pad > 2 or (len(b64) - pad) % 4 == 1:
        raise ValueError("invalid base64: a character outside both alphabets, or a bad length")
    if check == "fast":
        image_format = _signature(decode_base64(b64[:SIGNATURE_CHARS]))
        n = len(b64) - pad
        if image_format is not None:  # a known signature: no header parse, the end marker decides
            tail = decode_base64(b64[(n - 128) // 4 * 4 : n] if n > 128 else b64[:n])
            if not _has_end_marker(tail, image_format):
                raise ValueError(f"{image_format} data without its end-of-image marker: truncated")
            return
    body = b64[: len(b64) - pad]
    head = decode_base64(body[:HEAD_CHARS])
    try:
        with Image.open(io.BytesIO(head)) as image:
            image_format = image.format
    except Exception:  # noqa: BLE001 - the head ended inside the header: decode it all
        if len(body) <= HEAD_CHARS:
            raise
        return check_image(decode_base64(body), "fast" if check == "fast" else "header")
    if check == "fast":
        tail = head if len(body) <= HEAD_CHARS else decode_base64(body[(len(body) - 128) // 4 * 4 :])
        if not _has_end_marker(tail, image_format):
            raise ValueError(f"{image_format} data without its end-of-image marker: truncated")


def _padded(b64: bytes) -> bytes:
    """The text as stored: unchanged when correctly padded, else with its padding restored (so
    Chinese-CLIP's `urlsafe_b64decode` reads it)."""
    if len(b64) % 4 == 0:
        return b64  # correctly padded (or a length no padding fixes, refused by the check)
    body = b64.rstrip(b"=")
    return body + b"=" * (-len(body) % 4)


def _check_batch(batch: list[tuple], check: str) -> list[str | None]:
    """Per entry: None when its image is good, else why not (runs in worker processes too)."""
    verdicts = []
    for _, _, image_id, b64, problem in batch:
        if problem is None:
            try:
                check_encoded(b64, check)
            except Exception as err:  # noqa: BLE001 - any decoder failure marks the line bad
                problem = f"image {image_id}: {type(err).__name__}: {err}"
        verdicts.append(problem)
    return verdicts


def _checked(batches: Iterator[list[tuple]], check: str, workers: int) -> Iterator[tuple[list, list]]:
    """(batch, verdicts) in file order; with `workers`, checked in that many processes, a bounded
    window of batches ahead (memory stays flat whatever the file size)."""
    if workers <= 0:
        for batch in batches:
            yield batch, _check_batch(batch, check)
        return
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers) as pool:
        window: deque = deque()
        for batch in batches:
            window.append((batch, pool.submit(_check_batch, batch, check)))
            if len(window) >= 2 * workers:
                done, future = window.popleft()
                yield done, future.result()
        while window:
            done, future = window.popleft()
            yield done, future.result()


def _store_images(
    tsv: Path, env, stage: _Stage, *, check: str, commit_every: int, workers: int, progress: bool
):
    counts = stage.state["counts"]
    start, line_no = stage.progress["offset"], stage.progress["line"]
    seen: set[bytes] = set()  # ids stored by this run; earlier runs' ids are in the snapshot `txn`
    bar = tqdm(total=tsv.stat().st_size, initial=start, unit="B", unit_scale=True, disable=not progress)
    bar.set_description(f"{tsv.name}")
    offset = start
    with env.begin() as txn:
        for batch, verdicts in _checked(_parsed_batches(tsv, start, line_no, commit_every), check, workers):
            puts = []
            for (line_no, _, image_id, b64, _), problem in zip(batch, verdicts):
                if problem is not None:
                    stage.error(tsv, line_no, problem, "bad_images")
                    continue
                key = image_id.encode("utf-8")
                if key in seen or txn.get(key) is not None:
                    stage.note(f"{tsv}:{line_no}: image {image_id} repeated; the last line wins")
                seen.add(key)
                counts["image_lines"] = counts.get("image_lines", 0) + 1
                puts.append((key, _padded(b64)))
            bar.update(batch[-1][1] - offset)
            offset = batch[-1][1]
            stage.commit(env, puts, offset, batch[-1][0])
    bar.close()
    entries = env.stat()["entries"]
    with env.begin() as txn:
        entries -= txn.get(NUM_IMAGES_KEY) is not None
    put_batch(env, [(NUM_IMAGES_KEY, str(entries).encode("utf-8"))])
    counts["images"] = entries
    # exact across resumes: every valid line was put once, so the surplus over distinct keys repeats one
    counts["duplicate_images"] = counts.get("image_lines", 0) - entries
    stage.finish(env)


def _valid_id(value) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def parse_text_line(line: str) -> tuple[object, str, list]:
    """One JSONL query line → (text_id, text, image_ids); ValueError naming what is wrong."""
    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in ("text_id", "text", "image_ids") if k not in obj]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    if not _valid_id(obj["text_id"]) or not isinstance(obj["text"], str):
        raise ValueError(f"text_id must be an int and text a string, got {obj['text_id']!r}, {obj['text']!r}")
    if not isinstance(obj["image_ids"], list) or not all(_valid_id(i) for i in obj["image_ids"]):
        raise ValueError(f"image_ids must be a list of ints, got {obj['image_ids']!r}")
    return obj["text_id"], obj["text"], obj["image_ids"]


def _store_pairs(
    jsonl: Path, env, image_ids: set[str], stage: _Stage, *, commit_every: int, progress: bool
) -> None:
    counts, puts = stage.state["counts"], []
    start, line_no = stage.progress["offset"], stage.progress["line"]
    offset = start
    written = counts.get("pairs", 0)
    bar = tqdm(total=jsonl.stat().st_size, initial=start, unit="B", unit_scale=True, disable=not progress)
    bar.set_description(f"{jsonl.name}")
    for offset, raw in _iter_lines(jsonl, start):
        line_no += 1
        bar.update(len(raw))
        line = raw.decode("utf-8", errors="replace").strip()
        if not line:
            continue
        try:
            text_id, text, ids = parse_text_line(line)
        except ValueError as err:  # json.JSONDecodeError is a ValueError
            stage.error(jsonl, line_no, str(err), "bad_texts")
            continue
        counts["texts"] = counts.get("texts", 0) + 1
        for image_id in ids:
            if str(image_id) not in image_ids:
                stage.error(
                    jsonl, line_no, f"text {text_id}: image {image_id} is not stored", "pairs_without_image"
                )
                continue
            puts.append((str(written).encode("utf-8"), dumps_pair(image_id, text_id, text)))
            written += 1
        if len(puts) >= commit_every:
            counts["pairs"] = written
            stage.commit(env, puts, offset, line_no)
    bar.close()
    counts["pairs"] = written
    stage.commit(env, puts, offset, line_no)
    put_batch(env, [(NUM_SAMPLES_KEY, str(written).encode("utf-8"))])
    stage.finish(env)


def _stored_image_ids(env) -> set[str]:
    with env.begin() as txn:
        return {k.decode("utf-8") for k in txn.cursor().iternext(values=False) if k != NUM_IMAGES_KEY}


def _summary(split: str, state: dict, skipped: bool, seconds: float) -> PrepareSummary:
    counts = state["counts"]
    known = {
        f for f in PrepareSummary.__dataclass_fields__ if f not in ("split", "errors", "skipped", "seconds")
    }
    return PrepareSummary(
        split=split,
        errors=list(state["errors"]),
        skipped=skipped,
        seconds=seconds,
        **{k: v for k, v in counts.items() if k in known},
    )


def _rolled_back(out: Path, state: dict) -> bool:
    """Whether an environment holds fewer entries than the state recorded at its last commit."""
    for name in ("imgs", "pairs"):
        expected = state.get(name, {}).get("entries")
        if expected is None:
            continue
        if not (out / name / "data.mdb").is_file():
            return True
        env = open_env(out / name)
        try:
            if env.stat()["entries"] != expected:
                return True
        finally:
            env.close()
    return False


def _fresh_state(out: Path, sources: dict) -> dict:
    for name in ("imgs", "pairs"):
        shutil.rmtree(out / name, ignore_errors=True)
    return {"version": STATE_VERSION, "sources": sources, "counts": {}, "errors": [], "done": False}


def prepare_split(
    data_dir: str | Path,
    split: str,
    *,
    lmdb_dir: str | Path | None = None,
    on_error: str = "skip",
    check: str = "decode",
    commit_every: int = 1000,
    workers: int = 0,
    progress: bool = True,
) -> PrepareSummary:
    """Convert one split (see `prepare_muge`)."""
    if on_error not in ON_ERROR:
        raise ValueError(f"unknown on_error {on_error!r}; valid choices: {', '.join(ON_ERROR)}")
    if check not in CHECKS:
        raise ValueError(f"unknown check {check!r}; valid choices: {', '.join(CHECKS)}")
    start = time.perf_counter()
    tsv, jsonl = split_files(data_dir, split)
    missing = [str(p) for p in (tsv, jsonl) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"split {split!r}: missing {', '.join(missing)}")
    out = Path(lmdb_dir or Path(data_dir) / "lmdb") / split
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE_FILE
    sources = _fingerprint([tsv, jsonl])
    state = json.loads(state_path.read_text()) if state_path.is_file() else None
    if state is None or state.get("version") != STATE_VERSION or state.get("sources") != sources:
        state = _fresh_state(out, sources)
    elif state.get("done"):
        summary = _summary(split, state, True, time.perf_counter() - start)
        if on_error == "raise" and summary.problems:
            raise MugeDataError(
                f"split {split} was prepared with {summary.problems} problem(s): {summary.errors[:3]}"
            )
        return summary
    elif _rolled_back(out, state):  # a machine crash lost commits the state had recorded: start over
        state = _fresh_state(out, sources)
    _write_state(state_path, state)

    imgs_env = open_env(out / "imgs", write=True, sync=False)  # flushed once per stage (`_Stage.finish`)
    try:
        stage = _Stage(state, "imgs", state_path, on_error)
        if not stage.progress["done"]:
            _store_images(
                tsv,
                imgs_env,
                stage,
                check=check,
                commit_every=commit_every,
                workers=workers,
                progress=progress,
            )
        image_ids = _stored_image_ids(imgs_env)
    finally:
        imgs_env.close()
    pairs_env = open_env(out / "pairs", write=True, sync=False)
    try:
        stage = _Stage(state, "pairs", state_path, on_error)
        if not stage.progress["done"]:
            _store_pairs(jsonl, pairs_env, image_ids, stage, commit_every=commit_every, progress=progress)
    finally:
        pairs_env.close()
    state["done"] = True
    _write_state(state_path, state)
    return _summary(split, state, False, time.perf_counter() - start)


def prepare_muge(
    data_dir: str | Path,
    splits: Sequence[str] | None = None,
    *,
    lmdb_dir: str | Path | None = None,
    on_error: str = "skip",
    check: str = "decode",
    commit_every: int = 1000,
    workers: int = 0,
    progress: bool = True,
) -> dict[str, PrepareSummary]:
    """Convert MUGE's `{split}_imgs.tsv` + `{split}_texts.jsonl` into Chinese-CLIP's LMDB layout.

    Args:
        data_dir: the folder holding the TSV/JSONL files.
        splits: which splits; default every one of train/valid/test whose two files exist.
        lmdb_dir: output root (default `data_dir/lmdb`); each split goes to `lmdb_dir/<split>`.
        on_error: "skip" (report file:line, count, continue) or "raise" (`MugeDataError`).
        check: "decode" (Pillow decodes every image), "fast" (header and end-of-image marker),
            "header" (format and size only), "none" (see `check_image`).
        commit_every: lines per LMDB transaction (and per resume checkpoint).
        workers: processes that check images (0: in this process); writing stays in order.
        progress: show a tqdm bar per file.

    Returns:
        {split: PrepareSummary}. Warnings are issued for every reported line.
    """
    if splits is None:
        splits = [s for s in SPLITS if all(p.is_file() for p in split_files(data_dir, s))]
        if not splits:
            raise FileNotFoundError(
                f"{data_dir} holds no MUGE split (expected {{train,valid,test}}_imgs.tsv and _texts.jsonl)"
            )
    return {
        split: prepare_split(
            data_dir,
            split,
            lmdb_dir=lmdb_dir,
            on_error=on_error,
            check=check,
            commit_every=commit_every,
            workers=workers,
            progress=progress,
        )
        for split in splits
    }


def summary_dict(summary: PrepareSummary) -> dict:
    """A JSON-ready dict of a summary (for the CLI and run folders)."""
    return {**asdict(summary), "problems": summary.problems}
