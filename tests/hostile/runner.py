"""Run the hostile corpus against registered entries: one forked process per entry, all its cases.

    python -m tests.hostile.runner --out results.json [ENTRY ...]
    python -m tests.hostile.runner --out results.json --table     # the closing note's table

Imports every `tests/hostile/entries_*.py` once, then forks one child per entry (two at a time).
The child builds each case afresh (`make` into an empty folder, one mutation), calls the entry and
records the outcome; its peak RSS (`resource.getrusage`) above what it held after the valid case
is the entry's memory figure. The parent writes every case's outcome as JSON:

    {"entry": {"module": ..., "cases": [{"target", "kind", "mutation", "outcome", "detail"}...],
               "rss_mb": peak increase, "rss_bound_mb": ..., "seconds": ...}, ...}

Outcomes that pass: valid, refused (InputError naming the file), handled, skipped, n/a. Outcomes
that fail: accepted (no error, not in `handled`), unnamed (InputError naming no input file),
crashed (any other exception), invalid (the unmutated input refused), refused_handled (an error
where `handled` documents acceptance), timeout.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from tests.hostile import corpus
from tests.hostile.registry import ENTRIES, HOOKS, RSS_BOUNDS_MB, Entry

RSS_BOUND_MB = 200  # peak RSS growth of any one case, per entry (the corpus's biggest file is 32 MiB)
ENTRY_TIMEOUT_S = 90
PASSING = {"valid", "refused", "handled", "skipped", "n/a"}
HERE = Path(__file__).resolve().parent


def load_entries() -> list[Entry]:
    """Import every entries_*.py (registering as they import) and return the registry."""
    for path in sorted(HERE.glob("entries_*.py")):
        importlib.import_module(f"tests.hostile.{path.stem}")
    return ENTRIES


def cases(entry: Entry) -> list[tuple[str, str, str, corpus.Mutation | None]]:
    """(target, kind, mutation name, fn) for every case of the entry; the valid case first."""
    out: list[tuple[str, str, str, corpus.Mutation | None]] = [("", "", "valid", None)]
    for target, kind in entry.targets.items():
        for name, fn in corpus.MUTATIONS[kind]:
            out.append((target, kind, name, HOOKS.get((entry.name, name), fn)))
    return out


def _lookup(table: dict[str, str], mutation: str, target: str) -> str | None:
    return table.get(f"{mutation}@{target}", table.get(mutation))


def patch_limits() -> None:
    """Make every default `limits=` in vmmlib the small TEST_LIMITS, so a small corpus crosses them."""
    from vmmlib.io import safe

    original = getattr(patch_limits, "original", None) or safe.DEFAULT_LIMITS
    patch_limits.original = original  # type: ignore[attr-defined]
    safe.DEFAULT_LIMITS = corpus.TEST_LIMITS
    for name, module in list(sys.modules.items()):
        if name.startswith("vmmlib") and module is not None:
            for value in list(vars(module).values()):
                for fn in _functions(value):
                    _swap_defaults(fn, original)
            if getattr(module, "DEFAULT_LIMITS", None) is original:
                module.DEFAULT_LIMITS = corpus.TEST_LIMITS


def _functions(value):
    if isinstance(value, type) and value.__module__.startswith("vmmlib"):
        for attr in vars(value).values():
            fn = getattr(attr, "__func__", attr)
            if callable(fn) and hasattr(fn, "__defaults__"):
                yield fn
    elif (
        callable(value)
        and hasattr(value, "__defaults__")
        and getattr(value, "__module__", "")
        and (value.__module__.startswith("vmmlib"))
    ):
        yield value


def _swap_defaults(fn, original) -> None:
    if fn.__defaults__ and any(d is original for d in fn.__defaults__):
        fn.__defaults__ = tuple(corpus.TEST_LIMITS if d is original else d for d in fn.__defaults__)
    kw = fn.__kwdefaults__
    if kw and any(v is original for v in kw.values()):
        fn.__kwdefaults__ = {k: (corpus.TEST_LIMITS if v is original else v) for k, v in kw.items()}


def _names_input(error: BaseException, case_dir: Path) -> bool:
    text = f"{error} {getattr(error, 'path', '') or ''}"
    return any(os.fspath(p) in text for p in {case_dir, case_dir.resolve()})


def run_case(entry: Entry, case_dir: Path, target: str, kind: str, mutation: str, fn) -> dict:
    """Build the input afresh, mutate it, call the entry; the outcome as a dict."""
    from vmmlib.io.safe import InputError

    record = {"target": target, "kind": kind, "mutation": mutation}
    why_skip = _lookup(entry.skip, mutation, target)
    if why_skip is not None:
        return {**record, "outcome": "skipped", "detail": why_skip}
    root = case_dir / "root"
    root.mkdir(parents=True)
    made = Path(entry.make(root))
    handled = _lookup(entry.handled, mutation, target)
    either = handled is None and _lookup(corpus.DEFAULT_HANDLED, mutation, target) is not None
    try:
        if fn is not None:
            _mutate(fn, made, root, case_dir, target, kind)
    except corpus.NotApplicable as e:
        return {**record, "outcome": "n/a", "detail": str(e)}
    patch_limits()
    try:
        entry.call(made)
    except InputError as e:
        if fn is None:
            return {**record, "outcome": "invalid", "detail": str(e)[:500]}
        if handled is not None:
            return {**record, "outcome": "refused_handled", "detail": f"{str(e)[:300]} (handled: {handled})"}
        named = _names_input(e, case_dir)  # `either`: refusing by name passes too
        return {**record, "outcome": "refused" if named else "unnamed", "detail": str(e)[:500]}
    except BaseException as e:  # noqa: BLE001 - every other exception is the failure we report
        if isinstance(e, KeyboardInterrupt):
            raise
        tb = traceback.format_exception(type(e), e, e.__traceback__, limit=-3)
        return {
            **record,
            "outcome": "crashed",
            "detail": f"{type(e).__name__}: {str(e)[:300]}\n{''.join(tb)[-1500:]}",
        }
    if fn is None:
        return {**record, "outcome": "valid", "detail": ""}
    if handled is not None or either:
        return {**record, "outcome": "handled", "detail": handled or corpus.DEFAULT_HANDLED[mutation]}
    return {**record, "outcome": "accepted", "detail": "returned normally; not in `handled`"}


def _mutate(fn, made: Path, root: Path, case_dir: Path, target: str, kind: str) -> None:
    if "!" in target:
        zip_rel, member = target.split("!", 1)
        if fn.__name__ in corpus.FILE_ONLY:
            raise corpus.NotApplicable("a zip member is not a file of its own")
        zip_path = made / zip_rel if zip_rel else made
        corpus.apply_to_member(fn, zip_path, member, root, case_dir / "scratch", kind)
        return
    if not target and fn.__name__ in corpus.FILE_ONLY - {"directory"}:
        raise corpus.NotApplicable("the path the user gave is not inside a data root")
    path = made / target if target else made
    corpus.KIND_HINT[os.fspath(path)] = kind
    fn(path, root)


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _cap_memory(extra_bytes: int = 3 << 30) -> None:
    """A safety net on a shared machine: the heap may grow by at most `extra_bytes`."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmData:"):
                now = int(line.split()[1]) * 1024
                _, hard = resource.getrlimit(resource.RLIMIT_DATA)
                resource.setrlimit(resource.RLIMIT_DATA, (now + extra_bytes, hard))
    except (OSError, ValueError):
        pass


def run_entry(entry: Entry, workdir: Path) -> dict:
    """Every case of the entry, each measured for its peak RSS over the RSS it started from.

    A warm-up call on a valid input first pays the imports and caches the entry loads lazily; then
    the peak is reset before each case (/proc/self/clear_refs, Linux >= 4.0; elsewhere the peak is
    only measured over the warm-up's, a weaker check).
    """
    start = time.perf_counter()
    _cap_memory()
    _warm_up(entry, workdir / "warm-up")
    results, grown = [], 0.0
    for k, (target, kind, mutation, fn) in enumerate(cases(entry)):
        case_dir = workdir / f"case{k:03d}"
        case_dir.mkdir()
        gc.collect()
        before = _reset_peak()
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            results.append(run_case(entry, case_dir, target, kind, mutation, fn))
        except Exception as e:  # noqa: BLE001 - make() or the corpus itself broke: report, go on
            results.append({"target": target, "kind": kind, "mutation": mutation, "outcome": "crashed",
                            "detail": f"building the case failed: {type(e).__name__}: {e}"})  # fmt: skip
        results[-1]["seconds"] = round(time.perf_counter() - wall, 3)
        results[-1]["cpu"] = round(time.process_time() - cpu, 3)
        results[-1]["rss_mb"] = round(_maxrss_mb() - before, 1)
        grown = max(grown, results[-1]["rss_mb"])
    return {
        "module": entry.module,
        "cases": results,
        "rss_mb": grown,
        "rss_bound_mb": RSS_BOUNDS_MB.get(entry.name, RSS_BOUND_MB),
        "seconds": round(time.perf_counter() - start, 2),
    }


def _warm_up(entry: Entry, folder: Path) -> None:
    folder.mkdir()
    try:
        entry.call(Path(entry.make(folder)))
    except Exception:  # noqa: BLE001, S110 - the valid case reports any failure
        pass


def _reset_peak() -> float:
    """Reset the peak RSS to the current RSS where Linux allows it; the value to measure from (MB)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return _maxrss_mb()


def _child(entry: Entry, workdir: Path, out: Path) -> None:
    os.setpgid(0, 0)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # entries may print; the JSON goes to a file
    try:
        report = run_entry(entry, workdir)
    except BaseException as e:  # noqa: BLE001
        report = {"module": entry.module, "cases": [], "error": f"{type(e).__name__}: {e}"}
    out.write_text(json.dumps(report))
    os._exit(0)


def run_all(entries: list[Entry], workdir: Path, parallel: int = 2) -> dict:
    """Fork one child per entry, `parallel` at a time; their reports by entry name."""
    sys.stdout.flush()
    sys.stderr.flush()
    pending = list(enumerate(entries))
    running: dict[int, tuple[Entry, Path, float]] = {}
    reports = {}
    while pending or running:
        while pending and len(running) < parallel:
            k, entry = pending.pop(0)
            folder = workdir / f"entry{k:03d}"
            folder.mkdir()
            pid = os.fork()
            if pid == 0:
                _child(entry, folder, folder / "report.json")
            running[pid] = (entry, folder, time.monotonic())
        pid, _ = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            time.sleep(0.02)
            for pid, (entry, _folder, started) in list(running.items()):
                if time.monotonic() - started > ENTRY_TIMEOUT_S:
                    os.killpg(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    del running[pid]
                    reports[entry.name] = {"module": entry.module, "cases": [], "error": "timeout"}
            continue
        entry, folder, _ = running.pop(pid)
        report_file = folder / "report.json"
        reports[entry.name] = (
            json.loads(report_file.read_text())
            if report_file.exists()
            else {"module": entry.module, "cases": [], "error": "the child died without a report"}
        )
    return reports


def table(reports: dict) -> str:
    """The closing note's table: per mutation, the entries it ran on and what they did."""
    rows: dict[str, dict[str, set | int]] = {}
    for name, report in reports.items():
        for c in report["cases"]:
            row = rows.setdefault(c["mutation"], {"entries": set(), "cases": 0})
            if c["outcome"] in ("n/a", "skipped"):
                continue
            row["entries"].add(name)
            row["cases"] += 1
            row[c["outcome"]] = row.get(c["outcome"], 0) + 1
    lines = ["| mutation | entry points | cases | refused (InputError naming the file) | handled as documented | failing |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for mutation, row in rows.items():
        failing = row["cases"] - row.get("refused", 0) - row.get("handled", 0) - row.get("valid", 0)
        lines.append(
            f"| {mutation} | {len(row['entries'])} | {row['cases']} | {row.get('refused', 0)} | "
            f"{row.get('handled', 0)} | {failing} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("entries", nargs="*", help="entry names (default: all)")
    parser.add_argument("--out", required=True, help="where to write the JSON report")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--table", action="store_true", help="print the table of an existing --out report")
    args = parser.parse_args(argv)
    if args.table:
        print(table(json.loads(Path(args.out).read_text())))
        return 0
    entries = load_entries()
    if args.entries:
        entries = [e for e in entries if e.name in set(args.entries)]
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        reports = run_all(entries, Path(tmp), args.parallel)
    Path(args.out).write_text(json.dumps(reports, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
