"""`vmm prepare muge DATA_DIR`: MUGE's TSV + JSONL files → Chinese-CLIP's LMDB layout (SPEC §1.3, §9.2).

    DATA_DIR/{split}_imgs.tsv      image_id \\t base64(image file)     (standard or url-safe alphabet)
    DATA_DIR/{split}_texts.jsonl   {"text_id": int, "text": str, "image_ids": [int, ...]}
      → DATA_DIR/lmdb/{split}/imgs, DATA_DIR/lmdb/{split}/pairs   (`vmmlib.io.lmdb_store` layout)

What Chinese-CLIP's `build_lmdb_dataset` does not, and this does:

- every image is checked (`vmmlib.data.image_checks`): its base64 must decode (either alphabet) and
  Pillow must decode the result (`check="decode"`; JPEG at 1/8 scale, which still reads every
  entropy-coded byte), or, at a fraction of the cost, `check="fast"`: every base64 character
  validated, the file signature (JPEG, PNG, GIF; other formats: the header, parsed by Pillow) and
  the end-of-image marker present (truncation caught, corrupt entropy data not; faster than
  Chinese-CLIP's unchecked builder, `benchmarks/bench_muge.py prepare`). `workers` processes check
  batches in parallel, each reading its batch's bytes itself, while this one parses the
  memory-mapped file and writes in file order. A bad line is reported with its file and line
  number and skipped (`on_error="skip"`) or raises (`"raise"`); the summary counts it. Nothing is
  dropped silently: a pair whose image was skipped or is absent from the TSV is counted and
  reported too (upstream would store it and crash on read).
- images are stored first, pairs second, so only pairs whose image exists are written.
- resumable: progress (byte offsets, counts, entries, the first errors) is committed with every
  LMDB transaction into `lmdb/{split}/vmm_prepare.json`; a rerun continues where it stopped, and a
  finished split whose source files are unchanged is skipped. Changed sources start over. Commits
  are flushed to disk once per stage, not each (a killed process loses nothing; the images flush
  while the pairs are stored); should a machine crash roll the LMDB back behind the recorded
  entries, the rerun starts the split over.
- a stale LMDB is removed before a fresh build (reopening one keeps its old keys).
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from vmmlib.data.image_checks import CHECKS, check_encoded
from vmmlib.data.worker_pool import process_pool
from vmmlib.io.lmdb_store import (
    NUM_IMAGES_KEY,
    NUM_SAMPLES_KEY,
    dumps_pair,
    open_env,
    put_batch,
)
from vmmlib.io.safe import InputError, check_file, parse_json
from vmmlib.progress import progress as progress_bar

SPLITS = ("train", "valid", "test")
ON_ERROR = ("skip", "raise")
STATE_FILE = "vmm_prepare.json"
STATE_VERSION = 1
READ_BUFFER = 1 << 20
MAX_REPORTED = 50  # error messages kept in the summary; every one is counted


class MugeDataError(InputError):
    """A malformed line in a MUGE source file (with `on_error="raise"`).

    An `InputError`; the message alone (`path:line: reason`) when `path` is not given."""

    def __init__(self, reason: str, path: str | os.PathLike | None = None, where: str | None = None):
        super().__init__(path, reason, where)

    def __reduce__(self):
        return (type(self), (self.reason, self.path, self.where))


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


def _fingerprint(paths: Sequence[Path]) -> dict[str, list[int]]:
    return {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in paths}


def _write_state(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, ensure_ascii=False))
    os.replace(tmp, path)


_BOM = b"\xef\xbb\xbf"  # a leading UTF-8 byte-order mark is dropped, as `vmmlib.io.safe` does


def _iter_lines(path: Path, offset: int) -> Iterator[tuple[int, bytes]]:
    """(byte offset after the line, raw line) from `offset` on."""
    with open(path, "rb", buffering=READ_BUFFER) as f:  # 1 MiB: a long line no longer spans 3 reads
        f.seek(offset)
        for line in f:
            offset += len(line)
            yield offset, line[3:] if offset == len(line) and line.startswith(_BOM) else line


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

    def finish(self, env, *, flush: bool = True) -> None:
        """Flush the environment to disk (unless the caller did), then mark the stage done."""
        if flush:
            env.sync(True)
        self.progress.update(done=True, entries=env.stat()["entries"])
        _write_state(self.state_path, self.state)


_WHITESPACE = b" \t\r\n\x0b\x0c"


def _split_plain(buf, a: int, b: int) -> tuple[str, bytes, None] | None:
    """(image id, base64, None) of the line `buf[a:b]` when it is `id<TAB>base64<newline>` with no other
    white space around them and an ASCII id, sliced once out of `buf`; None for anything else (the
    general path then parses or reports it)."""
    tab = buf.find(b"\t", a, b)
    end = b
    while end > tab + 1 and buf[end - 1] in _WHITESPACE:
        end -= 1
    if tab <= a or end == tab + 1 or buf[a] in _WHITESPACE or buf.find(b"\t", tab + 1, end) >= 0:
        return None
    head = buf[a:tab]
    if not head.isascii() or head[-1] in _WHITESPACE:
        return None
    return head.decode("ascii"), buf[tab + 1 : end], None


def _parse_line(raw: bytes) -> tuple[str | None, bytes | None, str | None] | None:
    """(image id, base64, problem) of any line; None for a blank one."""
    line = raw.strip()
    if not line:
        return None
    parts = line.split(b"\t")
    try:
        image_id = parts[0].decode("utf-8")
    except UnicodeDecodeError:
        image_id = ""
    if len(parts) != 2 or not image_id:
        return None, None, f"expected 'image_id<TAB>base64' with a UTF-8 id, got {len(parts)} field(s)"
    return image_id, parts[1], None


def _parsed_batches(
    tsv: Path, start: int, line_no: int, size: int, end: int | None = None
) -> Iterator[list[tuple]]:
    """Lines from byte `start` on (to `end`), `size` per batch, as (line_no, offset after, image_id,
    base64 bytes or None, problem or None); blank lines are dropped. A batch ends right after its
    last entry, so it covers the bytes from the previous batch's last offset to its own.

    The file is memory-mapped: the base64 text is copied once, from the page cache into the bytes
    object stored, where reading lines would copy it three times (buffer, line, slice).
    """
    with open(tsv, "rb") as f:
        stop = os.fstat(f.fileno()).st_size if end is None else end
        if start >= stop:
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            buf.madvise(mmap.MADV_SEQUENTIAL)
            batch, pos = [], start + (3 if start == 0 and buf[:3] == _BOM else 0)
            while pos < stop:
                newline = buf.find(b"\n", pos, stop)
                after = stop if newline < 0 else newline + 1
                line_no += 1
                fields = _split_plain(buf, pos, after) or _parse_line(buf[pos:after])
                pos = after
                if fields is None:
                    continue
                batch.append((line_no, after, *fields))
                if len(batch) >= size:
                    yield batch
                    batch = []
            if batch:
                yield batch


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


def _check_range(tsv: Path, start: int, end: int, line_no: int, check: str) -> list[str | None]:
    """`_check_batch` of the entries between bytes `start` and `end`, read here: a worker process
    gets four numbers, not the images (sending them would cost the parent more than checking)."""
    batch = next(_parsed_batches(tsv, start, line_no, size=end - start + 1, end=end), [])
    return _check_batch(batch, check)


def _checked(
    batches: Iterator[list[tuple]], check: str, workers: int, tsv: Path, start: int, line_no: int
) -> Iterator[tuple[list, list]]:
    """(batch, verdicts) in file order; with `workers`, checked in that many processes that read
    their batch's bytes themselves, a bounded window of batches ahead (memory stays flat whatever
    the file size), while this process parses and writes."""
    if workers <= 0:
        for batch in batches:
            yield batch, _check_batch(batch, check)
        return
    from collections import deque

    with process_pool(workers) as pool:
        window: deque = deque()
        for batch in batches:
            window.append((batch, pool.submit(_check_range, tsv, start, batch[-1][1], line_no, check)))
            start, line_no = batch[-1][1], batch[-1][0]
            if len(window) >= 4 * workers:
                yield _verdicts(*window.popleft())
        while window:
            yield _verdicts(*window.popleft())


def _verdicts(batch: list, future) -> tuple[list, list]:
    verdicts = future.result()
    if len(verdicts) != len(batch):  # the file changed under us
        raise RuntimeError(f"a checking worker read {len(verdicts)} entries where {len(batch)} were parsed")
    return batch, verdicts


AUTO_WORKERS_FROM = 256 << 20  # bytes of TSV from which checking workers pay for their start


def _default_workers(tsv: Path) -> int:
    if tsv.stat().st_size < AUTO_WORKERS_FROM:
        return 0
    return max(0, min(8, len(os.sched_getaffinity(0)) - 1))


def _store_images(
    tsv: Path, env, stage: _Stage, *, check: str, commit_every: int, workers: int, progress: bool
):
    counts = stage.state["counts"]
    start, line_no = stage.progress["offset"], stage.progress["line"]
    seen: set[bytes] = set()  # ids stored by this run; earlier runs' ids are in the snapshot `txn`
    bar = progress_bar(
        total=tsv.stat().st_size, initial=start, unit="B", unit_scale=True, disable=not progress
    )
    bar.set_description(f"{tsv.name}")
    offset = start
    with env.begin() as txn:
        batches = _parsed_batches(tsv, start, line_no, commit_every)
        for batch, verdicts in _checked(batches, check, workers, tsv, start, line_no):
            puts = []
            for (line_no, _, image_id, b64, _), problem in zip(batch, verdicts):
                if problem is not None:
                    stage.error(tsv, line_no, problem, "bad_images")
                    continue
                key = image_id.encode("utf-8")
                if key in seen or txn.get(key) is not None:
                    if stage.on_error == "raise":  # otherwise kept, as Chinese-CLIP's builder does
                        stage.error(tsv, line_no, f"image {image_id} repeated", "duplicate_images")
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
    stage.progress["entries"] = entries + 1  # the count key too: a resume must not see a rollback
    _write_state(stage.state_path, stage.state)


def _valid_id(value) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def parse_text_line(line: str) -> tuple[object, str, list]:
    """One JSONL query line → (text_id, text, image_ids); ValueError naming what is wrong."""
    obj = parse_json(line, None)  # refuses NaN, overflowing numbers and nesting past the limit
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
    seen: dict[str, int] = {}  # text_id -> its line, in this run (a resumed run checks from where it starts)
    bar = progress_bar(
        total=jsonl.stat().st_size, initial=start, unit="B", unit_scale=True, disable=not progress
    )
    bar.set_description(f"{jsonl.name}")
    for offset, raw in _iter_lines(jsonl, start):
        line_no += 1
        bar.update(len(raw))
        try:
            line = raw.decode("utf-8").strip()
        except UnicodeDecodeError as err:  # never altered to U+FFFD unreported
            stage.error(jsonl, line_no, f"not valid UTF-8 (byte 0x{raw[err.start]:02x})", "bad_texts")
            continue
        if not line:
            continue
        try:
            text_id, text, ids = parse_text_line(line)
        except ValueError as err:  # invalid JSON (an InputError) is a ValueError
            stage.error(jsonl, line_no, str(err), "bad_texts")
            continue
        if str(text_id) in seen:
            stage.error(
                jsonl,
                line_no,
                f"text_id {text_id} repeated (first on line {seen[str(text_id)]})",
                "bad_texts",
            )
            continue
        seen[str(text_id)] = line_no
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


def _fresh_state(out: Path, sources: dict, options: dict) -> dict:
    for name in ("imgs", "pairs"):
        shutil.rmtree(out / name, ignore_errors=True)
    return dict(version=STATE_VERSION, sources=sources, options=options, counts={}, errors=[], done=False)


def _sources(data_dir: str | Path, split: str) -> tuple[Path, Path]:
    """The split's TSV and JSONL: FileNotFoundError when missing, InputError when not a non-empty file."""
    tsv, jsonl = split_files(data_dir, split)
    missing = [str(p) for p in (tsv, jsonl) if not p.exists()]
    if missing:
        raise FileNotFoundError(f"split {split!r}: missing {', '.join(missing)}")
    for path in (tsv, jsonl):
        if check_file(path, what=f"split {split!r} source").stat().st_size == 0:
            raise InputError(path, f"split {split!r} source file is empty")
    return tsv, jsonl


def _read_state(path: Path) -> dict | None:
    """The split's progress record; None when missing or unreadable (then the split starts over)."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def prepare_split(
    data_dir: str | Path,
    split: str,
    *,
    lmdb_dir: str | Path | None = None,
    on_error: str = "skip",
    check: str = "decode",
    commit_every: int = 1000,
    workers: int | None = None,
    progress: bool = True,
) -> PrepareSummary:
    """Convert one split (see `prepare_muge`)."""
    if on_error not in ON_ERROR:
        raise ValueError(f"unknown on_error {on_error!r}; valid choices: {', '.join(ON_ERROR)}")
    if check not in CHECKS:
        raise ValueError(f"unknown check {check!r}; valid choices: {', '.join(CHECKS)}")
    start = time.perf_counter()
    tsv, jsonl = _sources(data_dir, split)
    out = Path(lmdb_dir or Path(data_dir) / "lmdb") / split
    out.mkdir(parents=True, exist_ok=True)
    state_path = out / STATE_FILE
    sources = _fingerprint([tsv, jsonl])
    # what decides which lines are stored: a rerun with another check or on_error starts over, so a
    # stricter rerun checks every image instead of reporting "skipped" over images it never checked
    options = {"check": check, "on_error": on_error}
    state = _read_state(state_path)
    if (
        state is None
        or state.get("version") != STATE_VERSION
        or state.get("sources") != sources
        or state.get("options") != options
    ):
        state = _fresh_state(out, sources, options)
    elif state.get("done"):
        summary = _summary(split, state, True, time.perf_counter() - start)
        if on_error == "raise" and summary.problems:
            raise MugeDataError(
                f"split {split} was prepared with {summary.problems} problem(s): {summary.errors[:3]}"
            )
        return summary
    elif _rolled_back(out, state):  # a machine crash lost commits the state had recorded: start over
        state = _fresh_state(out, sources, options)
    _write_state(state_path, state)

    imgs_env = open_env(out / "imgs", write=True, sync=False)  # flushed once per stage
    try:
        images = _Stage(state, "imgs", state_path, on_error)
        if not images.progress["done"]:
            _store_images(
                tsv,
                imgs_env,
                images,
                check=check,
                commit_every=commit_every,
                workers=_default_workers(tsv) if workers is None else workers,
                progress=progress,
            )
        image_ids = _stored_image_ids(imgs_env)
        # the images go to disk while the pairs are stored (an fsync releases the GIL); the image
        # stage is marked done once they are there (a kill before: the rerun finds nothing left to read)
        with ThreadPoolExecutor(1) as flusher:
            flushed = flusher.submit(imgs_env.sync, True)
            pairs_env = open_env(out / "pairs", write=True, sync=False)
            try:
                pairs = _Stage(state, "pairs", state_path, on_error)
                if not pairs.progress["done"]:
                    _store_pairs(
                        jsonl, pairs_env, image_ids, pairs, commit_every=commit_every, progress=progress
                    )
            finally:
                pairs_env.close()
            flushed.result()
        images.finish(imgs_env, flush=False)
    finally:
        imgs_env.close()
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
    workers: int | None = None,
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
        workers: processes that check images while this one parses and writes (0: this one does
            it all); default one fewer than the CPUs this process may use (at most 8) for a TSV of
            256 MiB or more, else 0 (starting processes costs more than checking a small file).
        progress: a progress bar (or lines, `vmmlib.progress`) per file.

    Returns:
        {split: PrepareSummary}. Warnings are issued for every reported line.
    """
    if splits is None:
        splits = [s for s in SPLITS if all(p.is_file() for p in split_files(data_dir, s))]
        if not splits:
            raise FileNotFoundError(
                f"{data_dir} holds no MUGE split (expected {{train,valid,test}}_imgs.tsv and _texts.jsonl)"
            )
    options = dict(lmdb_dir=lmdb_dir, on_error=on_error, check=check, commit_every=commit_every,
                   workers=workers, progress=progress)  # fmt: skip
    return {split: prepare_split(data_dir, split, **options) for split in splits}


def summary_dict(summary: PrepareSummary) -> dict:
    """A JSON-ready dict of a summary (for the CLI and run folders)."""
    return {**asdict(summary), "problems": summary.problems}
