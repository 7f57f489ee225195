"""Issue 16: every entry point that reads user files, fed the hostile corpus, refuses with one
InputError naming the file (or handles the case as documented), within a memory bound.

Three tests hold the design together:
- `test_entry_survives_the_corpus[NAME]`: one per registered entry (tests/hostile/entries_*.py);
  its cases run in one forked process (runner.py), all entries in one runner subprocess;
- `test_every_module_using_safe_is_registered`: a module that imports vmmlib.io.safe is some
  entry's module (or in COVERAGE_ALLOWED with a reason);
- `test_no_direct_reads_of_user_files`: no json.load / zipfile.ZipFile / np.load / Image.open /
  pd.read_csv outside vmmlib/io/safe.py (or in DIRECT_READS_ALLOWED with a reason).
"""

from __future__ import annotations

import ast
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.hostile.runner import PASSING, load_entries

REPO = Path(__file__).resolve().parents[2]
ENTRIES = load_entries()

# Modules whose hostile-input work is still on another helper's branch (issue 16 is split in three).
# Their failures are expected until then; the lead empties this list when merging the branches.
PENDING: list[str] = []

# Modules that import vmmlib.io.safe without reading user files themselves.
COVERAGE_ALLOWED: dict[str, str] = {
    "vmmlib.io.safe": "the safe layer itself (tests/io/test_safe.py)",
    "vmmlib.app.cli": "prints InputError as one line; every file it reads goes through a registered entry",
    "vmmlib.submissions": "defines InvalidSubmissionError as an InputError; each format module has its entries",
    "vmmlib.io.wbdc_categories": "UnknownCategoryError is an InputError; it reads no file (ids come from wbdc's readers)",
    "vmmlib.extract.backbone": "reads only a local backbone folder's preprocessor_config.json, with safe.read_json",
    "vmmlib.io.lmdb_store": "UnsafePickleError is an InputError; its LMDBs are opened by vmmlib.data.muge.reader's entries",
}

# "path::call" -> why this direct read is not of a user file.
DIRECT_READS_ALLOWED: dict[str, str] = {
    "vmmlib/io/cache.py::np.load": "memory-maps arrays of a cache folder that `vmm cache` wrote itself",
    "vmmlib/runs.py::np.load": "reads predictions.npz of the project's own run folders",
    "vmmlib/app/compare.py::pd.read_csv": "reads history.csv that fit wrote into the project's own run folders",
    "vmmlib/app/track.py::pd.read_csv": "reads history.csv that fit wrote into the project's own run folders",
}


def _pending(modules) -> list[str]:
    return sorted(set(modules) & set(PENDING))


@pytest.fixture(scope="module")
def corpus_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile") / "results.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    subprocess.run(
        [sys.executable, "-m", "tests.hostile.runner", "--out", str(out)],
        cwd=REPO,
        env=env,
        check=True,
        timeout=600,
    )
    if os.environ.get("HOSTILE_REPORT"):  # keep the per-case JSON (runner.py --table prints its table)
        Path(os.environ["HOSTILE_REPORT"]).write_text(out.read_text())
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", [e.name for e in ENTRIES])
def test_entry_survives_the_corpus(name, corpus_results, request):
    entry = next(e for e in ENTRIES if e.name == name)
    if _pending([entry.module]):
        request.applymarker(
            pytest.mark.xfail(reason=f"pending on another branch: {entry.module}", strict=False)
        )
    report = corpus_results[name]
    assert "error" not in report, report["error"]
    failures = [c for c in report["cases"] if c["outcome"] not in PASSING]
    lines = [
        f"{c['mutation']}@{c['target'] or '.'} ({c['kind']}): {c['outcome']}: {c['detail']}" for c in failures
    ]
    assert not failures, f"{len(failures)} hostile case(s) failed for {name}:\n" + "\n".join(lines)
    assert report["rss_mb"] <= report["rss_bound_mb"], (
        f"{name}: peak RSS grew {report['rss_mb']} MB over the valid case, bound {report['rss_bound_mb']} MB"
    )


def test_the_registry_is_sound():
    """Entries name real modules and known kinds; every entry has at least its valid case."""
    from tests.hostile.corpus import MUTATIONS

    names = [e.name for e in ENTRIES]
    assert len(names) == len(set(names))
    for e in ENTRIES:
        assert e.module.startswith("vmmlib."), e.name
        assert (REPO / (e.module.replace(".", "/") + ".py")).exists() or (
            REPO / e.module.replace(".", "/") / "__init__.py"
        ).exists(), f"{e.name}: no module {e.module}"
        for kind in e.targets.values():
            assert kind in MUTATIONS, f"{e.name}: unknown kind {kind!r}"


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports_safe(path: Path, tree: ast.AST) -> bool:
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name == "vmmlib.io.safe" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            if base == "vmmlib.io.safe" or (
                base == "vmmlib.io" and any(a.name == "safe" for a in node.names)
            ):
                return True
    return False


@functools.cache
def _vmmlib_files() -> list[tuple[Path, ast.AST]]:
    out = []
    for path in sorted((REPO / "vmmlib").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if any(word in text for word in _WORDS):  # parsing every module costs seconds on a busy machine
            out.append((path, ast.parse(text, filename=str(path))))
    return out


_WORDS = ("safe", "json.load", "ZipFile", "np.load", "numpy.load", "Image.open", "read_csv")


def test_every_module_using_safe_is_registered(request):
    covered = {e.module for e in ENTRIES}
    missing = [
        _module_name(p)
        for p, tree in _vmmlib_files()
        if _imports_safe(p, tree)
        and _module_name(p) not in covered
        and _module_name(p) not in COVERAGE_ALLOWED
    ]
    if missing and set(missing) <= set(PENDING):
        request.applymarker(pytest.mark.xfail(reason=f"pending on another branch: {missing}", strict=False))
    assert not missing, f"modules read user files through vmmlib.io.safe but no entry covers them: {missing}"


_DIRECT = {
    ("json", "load"): "json.load",
    ("zipfile", "ZipFile"): "zipfile.ZipFile",
    ("np", "load"): "np.load",
    ("numpy", "load"): "np.load",
    ("Image", "open"): "Image.open",
    ("pd", "read_csv"): "pd.read_csv",
    ("pandas", "read_csv"): "pd.read_csv",
}


def _is_write(node: ast.Call) -> bool:
    """zipfile.ZipFile(f, "w"/"a"/"x"): writing our own archive, not reading a user's."""
    modes = [a for a in node.args[1:2] if isinstance(a, ast.Constant)]
    modes += [k.value for k in node.keywords if k.arg == "mode" and isinstance(k.value, ast.Constant)]
    return any(isinstance(m.value, str) and m.value[:1] in "wax" for m in modes)


def direct_reads() -> list[tuple[str, int, str]]:
    found = []
    for path, tree in _vmmlib_files():
        rel = path.relative_to(REPO).as_posix()
        if rel == "vmmlib/io/safe.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value
                if isinstance(owner, ast.Name) and (owner.id, node.func.attr) in _DIRECT:
                    call = _DIRECT[(owner.id, node.func.attr)]
                    if not (call == "zipfile.ZipFile" and _is_write(node)):
                        found.append((rel, node.lineno, call))
    return found


def test_no_direct_reads_of_user_files(request):
    bad = [(p, line, call) for p, line, call in direct_reads() if f"{p}::{call}" not in DIRECT_READS_ALLOWED]
    modules = {p.removesuffix(".py").replace("/", ".").removesuffix(".__init__") for p, _, _ in bad}
    if bad and modules <= set(PENDING):
        request.applymarker(
            pytest.mark.xfail(reason=f"pending on another branch: {sorted(modules)}", strict=False)
        )
    assert not bad, "read user files through vmmlib.io.safe instead:\n" + "\n".join(
        f"{p}:{line}: {call}(" for p, line, call in bad
    )


def test_the_grep_finds_what_it_should(tmp_path):
    """The AST scan sees the five calls, and lets a zip being written through."""
    code = "import json, zipfile\njson.load(f)\nzipfile.ZipFile(p)\nzipfile.ZipFile(p, 'w')\nnp.load(p)\n"
    tree = ast.parse(code)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    flagged = [
        _DIRECT[(c.func.value.id, c.func.attr)]
        for c in calls
        if (c.func.value.id, c.func.attr) in _DIRECT and not _is_write(c)
    ]
    assert flagged == ["json.load", "zipfile.ZipFile", "np.load"]


def test_the_corpus_mutations_do_what_they_say(tmp_path):
    """Bombs, bad headers and climbing members reach vmmlib.io.safe's refusals on their own."""
    import io
    import zipfile

    import numpy as np
    from PIL import Image

    from tests.hostile import corpus
    from vmmlib.io import safe
    from vmmlib.io.tfrecord import write_tfrecord

    root = tmp_path / "root"
    root.mkdir()
    for fmt, name in [("PNG", "a.png"), ("JPEG", "a.jpg")]:
        Image.new("RGB", (8, 8)).save(root / name, fmt)
        corpus.image_bomb(root / name, root)
        with pytest.raises(safe.InputError, match="20000×20000|not a readable image"):
            safe.image_size(root / name)
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 3), np.float32))
    for mutation in (corpus.npy_huge_shape, corpus.npy_object):
        (root / "a.npy").write_bytes(buf.getvalue())
        mutation(root / "a.npy", root)
        with pytest.raises(safe.InputError, match="npy"):
            safe.load_npy(root / "a.npy")
    with zipfile.ZipFile(root / "a.zip", "w") as z:
        z.writestr("x.txt", "x")
    corpus.zip_bomb(root / "a.zip", root)
    with pytest.raises(safe.InputError, match="a zip bomb"):
        safe.open_zip(root / "a.zip")
    with zipfile.ZipFile(root / "b.zip", "w") as z:
        z.writestr("x.txt", "x")
    corpus.zip_slip(root / "b.zip", root)
    with pytest.raises(safe.InputError, match="climbs out"):
        safe.open_zip(root / "b.zip")
    (root / "d.json").write_text('{"a": 1}')
    corpus.deep_json(root / "d.json", root)
    with pytest.raises(safe.InputError, match="nested deeper"):
        safe.read_json(root / "d.json")
    write_tfrecord(root / "a.tfrecord", [b"abc"])
    corpus.tfrecord_huge_length(root / "a.tfrecord", root)
    assert int.from_bytes((root / "a.tfrecord").read_bytes()[:8], "little") == 1 << 40
    (root / "t.csv").write_text("id,path\n1,t.csv\n2,d.json\n")
    corpus.path_climb(root / "t.csv", root)
    assert "../outside/d.json" in (root / "t.csv").read_text()
    (root / "t.csv").write_text("id,path\n1,d.json\n")
    corpus.path_absolute(root / "t.csv", root)
    assert str(tmp_path / "outside" / "d.json") in (root / "t.csv").read_text()
    corpus.symlink_out(root / "d.json", root)
    assert (root / "d.json").is_symlink() and not (root / "d.json").resolve().is_relative_to(root)
