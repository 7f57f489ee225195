"""Run folders and notebook parameters.

Every notebook execution writes one run folder (DESIGN.md "Runs"): `params.yaml` with every
parameter resolved, the executed notebook, `metrics.json`, `history.csv`, checkpoints and
predictions with ids. Notebooks call `notebook_params(globals())` right after their parameters
cell: it collects the declared parameters (the annotated names of the `parameters` cell), rejects
a parameter papermill injected that the notebook does not declare (papermill itself only warns),
and checks types.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import os
import shutil
import string
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from vmmlib import dryrun

PAPERMILL_PARAMS_HEADER = "# Parameters"


def submitted_weights(run_dir: str | Path) -> Path:
    """The weights a fine-tuning run folder submits: `checkpoints/best/model.safetensors` when `fit`
    selected a best checkpoint, else the final `model.safetensors` (layout: `vmmlib.train.checkpoint`)."""
    run_dir = Path(run_dir)
    best = run_dir / "checkpoints" / "best" / "model.safetensors"
    return best if best.exists() else run_dir / "model.safetensors"


def _type_ok(value: Any, annotation: Any) -> bool:
    if annotation in (Any, "Any", None):
        return True
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    text = str(text).replace("typing.", "")
    kinds = {t.strip() for t in text.split("|")}
    checks = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
        "bool": lambda v: isinstance(v, bool),
        "None": lambda v: v is None,
        "list": lambda v: isinstance(v, list),
        "dict": lambda v: isinstance(v, dict),
    }
    known = (
        [checks[k] for k in kinds if k in checks]
        + [(lambda v, k=k: isinstance(v, list)) for k in kinds if k.startswith("list[")]
        + [(lambda v, k=k: isinstance(v, dict)) for k in kinds if k.startswith("dict[")]
    )
    if len(known) < len(kinds):  # an annotation we do not interpret: accept
        return True
    return any(check(value) for check in known)


def injected_names(cells: Iterable[str]) -> set[str]:
    """Names assigned by papermill's injected `# Parameters` cells."""
    names: set[str] = set()
    for source in cells:
        if not source.lstrip().startswith(PAPERMILL_PARAMS_HEADER):
            continue
        for node in ast.parse(source).body:
            if isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def notebook_params(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The notebook's parameters with their current values, validated.

    Args:
        namespace: the notebook's `globals()`. Declared parameters are the annotated names of its
            `parameters` cell (`steps: int = 60`); injected values come from papermill.

    Raises:
        ValueError: a parameter was injected that the notebook does not declare, or a value does
            not match its declared type. The message lists the valid parameters.
    """
    annotations = dict(namespace.get("__annotations__", {}))
    if not annotations:
        raise ValueError("no annotated parameters found: declare them as `name: type = value`")
    unknown = injected_names(namespace.get("In", [])) - set(annotations)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(sorted(unknown))}; valid parameters: {', '.join(sorted(annotations))}"
        )
    params = {name: namespace[name] for name in annotations}
    for name, value in params.items():
        if not _type_ok(value, annotations[name]):
            raise ValueError(f"parameter {name}={value!r} should be {annotations[name]}")
    return params


def project_root(start: str | Path | None = None) -> Path:
    """The nearest folder at or above `start` (default: cwd) holding `params/` and `notebooks/`.

    Notebooks run with their own folder as working directory under nbval and with the caller's
    under papermill; resolving relative paths against the project root makes both agree.
    Falls back to `start` itself.
    """
    start = Path(start or os.getcwd()).resolve()
    for folder in (start, *start.parents):
        if (folder / "params").is_dir() and (folder / "notebooks").is_dir():
            return folder
    return start


def resolve_path(path: str | Path) -> Path:
    """An absolute path: relative ones are taken from the project root (see `project_root`)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else project_root() / path


def in_run_dir(run_dir: str | Path, path: str | Path, *, what: str = "path") -> Path:
    """`path` (absolute, or relative to `run_dir`) resolved, links followed, if it lies strictly
    below `run_dir`; else `InputError` naming both. Every path a runner writes or deletes goes
    through it, so no configuration can make it touch anything outside its run folder."""
    from vmmlib.io.safe import InputError, inside

    target = inside(run_dir, path, what=what)
    if target == Path(run_dir).resolve():
        raise InputError(run_dir, f"{what} {os.fspath(path)!r} is the run folder itself, not a path in it")
    return target


def _plain(value: Any) -> Any:
    """Convert numpy scalars/arrays and paths to YAML/JSON-friendly Python values."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


RUN_RECORD = "run.json"  # {"fingerprint", "params"}: the fingerprinted parameters that made the run
# Parameters that do not change a run's results, left out of its fingerprint: `restart` says what to do
# with an old run; `save_every` / `save_minutes` only say when resumable checkpoints are written (a
# resumed run ends bit-equal); `make_sample` only writes data that is missing; `out_dir` is the folder.
UNFINGERPRINTED = frozenset({"restart", "save_every", "save_minutes", "make_sample", "out_dir"})
FIT_OUTPUTS = ("model.safetensors", "history.csv", "checkpoints")  # what `vmmlib.train.loop.fit` writes


def params_fingerprint(params: Mapping[str, Any]) -> str:
    """A 16-hex-digit hash of the parameters that change results (all but `UNFINGERPRINTED`).

    Pass it to `vmmlib.train.loop.fit(..., fingerprint=...)` so `fit` resumes only a checkpoint made by
    the same parameters.
    """
    text = json.dumps(_fingerprinted(params), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _fingerprinted(params: Mapping[str, Any]) -> dict[str, Any]:
    plain = {k: v for k, v in _plain(dict(params)).items() if k not in UNFINGERPRINTED}
    return json.loads(json.dumps(plain, sort_keys=True, default=str))


def format_out_dir(out_dir: str | Path, params: Mapping[str, Any]) -> str:
    """`out_dir` with `{name}` fields filled from `params` (e.g. `runs/x/finetune-fold{fold}`).

    Raises:
        ValueError: naming the field that is not a parameter, and the valid names.
    """
    try:
        return string.Formatter().vformat(str(out_dir), (), dict(params))
    except (KeyError, IndexError, AttributeError, ValueError) as e:
        raise ValueError(
            f"out_dir {str(out_dir)!r}: cannot fill {e} from the parameters; "
            f"use {{name}} with a parameter name: {', '.join(sorted(params))}"
        ) from e


def start_run(out_dir: str | Path, params: Mapping[str, Any]) -> Path:
    """Create the run folder (`{name}` fields of `out_dir` filled from `params`), guarding a rerun.

    Writes `params.yaml` (every parameter, `out_dir` resolved) and `run.json` (the fingerprint of the
    parameters that change results, see `params_fingerprint`, and of the data they name, see
    `data_fingerprint`). When the folder already holds `fit` outputs (model, history, checkpoints)
    of a run made with other parameters or from other data (the files under `data_dir`,
    `pretrain_dir`, … changed since), it raises instead of letting the notebook resume or report
    that run; with `params["restart"]` true it deletes those outputs and `metrics.json` first, so
    the run starts afresh.

    Returns:
        the absolute run folder.

    Raises:
        ValueError: a field of `out_dir` is not a parameter, or the folder holds a run made with other
            parameters (each differing parameter is named, old → new) or other data (the folder and
            its changed, added and removed files are named).
    """
    out = resolve_path(format_out_dir(out_dir, params))
    new = _fingerprinted(params)
    data = {name: data_fingerprint(resolve_path(path)) for name, path in data_paths(params).items()}
    fitted = [n for n in FIT_OUTPUTS if (out / n).exists()]
    if params.get("restart"):
        for path in [out / n for n in (*fitted, "metrics.json")]:
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    elif fitted:
        record = _run_record(out)
        differ = _differences(record.get("params") if record else None, new)
        changed = _data_changes(record.get("data") if record else None, data, params)
        if differ or changed:
            made = " and ".join(
                [*(["with other parameters: " + "; ".join(differ)] if differ else []),
                 *(["from other data: " + "; ".join(changed)] if changed else [])]
            )  # fmt: skip
            raise ValueError(
                f"{out} holds a run ({', '.join(fitted)}) made {made}. "
                "Pass restart=True to delete its outputs and start afresh, or choose another out_dir."
            )
    out.mkdir(parents=True, exist_ok=True)
    write_yaml(out / "params.yaml", {**params, **({"out_dir": str(out)} if "out_dir" in params else {})})
    record = {"fingerprint": params_fingerprint(params), "params": new}
    record["data_fingerprint"] = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    _atomic_write_text(out / RUN_RECORD, json.dumps({**record, "data": data}, indent=1, ensure_ascii=False))
    return out


# Parameters naming inputs whose content a run depends on: their files are fingerprinted (see
# `data_fingerprint`) so a rerun after the data at the same path was regenerated does not report
# the old run. Run folders of other steps (`finetune_dirs`, `inference_dirs`) are not: the notebooks
# that read them recompute everything and keep no `fit` outputs to guard.
DATA_PARAMS = ("data_dir", "pretrain_dir", "text_model_dir", "truth_path")
DATA_BLOCK = 64 * 1024  # bytes hashed at each end of every data file


def data_paths(params: Mapping[str, Any]) -> dict[str, str]:
    """The data parameters (`DATA_PARAMS`) that `params` sets to a non-empty path."""
    return {k: params[k] for k in DATA_PARAMS if isinstance(params.get(k), (str, Path)) and str(params[k])}


def data_fingerprint(path: str | Path) -> dict[str, list]:
    """A cheap fingerprint of a data file or folder: relative name → [size, mtime_ns, hash].

    The hash covers the first and last `DATA_BLOCK` bytes of each file (BLAKE2b, 16 hex digits), so
    a regenerated or replaced file is caught even when its size and mtime were kept; reading cost
    stays 128 KiB per file whatever its size. Hidden files and folders (`.vmm_cache`, written by the
    readers themselves) and LMDB lock files are left out. A missing path gives `{}`.
    """
    root = Path(path)
    if root.is_file():
        return {".": _file_print(root)}
    found: dict[str, list] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith(".") or name == "lock.mdb":
                continue
            file = Path(folder) / name
            try:
                found[file.relative_to(root).as_posix()] = _file_print(file)
            except OSError:  # vanished or unreadable: recorded as such, so a change still shows
                found[file.relative_to(root).as_posix()] = [-1, 0, ""]
    return found


def _file_print(path: Path) -> list:
    st = path.stat()
    h = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as f:
        h.update(f.read(DATA_BLOCK))
        if st.st_size > DATA_BLOCK:
            f.seek(max(DATA_BLOCK, st.st_size - DATA_BLOCK))
            h.update(f.read(DATA_BLOCK))
    return [st.st_size, st.st_mtime_ns, h.hexdigest()]


def _data_changes(old: dict | None, new: dict[str, dict], params: Mapping[str, Any]) -> list[str]:
    """`data in <path> (<param>) changed: files a, b; added c; removed d` per changed data parameter.

    A run recorded before data was fingerprinted (`old` None) is taken as unchanged."""
    if old is None:
        return []
    notes = []
    for name in sorted(old.keys() | new.keys()):
        before, after = old.get(name) or {}, new.get(name) or {}
        if before == after:
            continue
        parts = [
            f"{label} {_some(names)}"
            for label, names in (
                ("files", [f for f in after if f in before and _content(before[f]) != _content(after[f])]),
                (
                    "modified (same size and end blocks, new mtime)",
                    [
                        f
                        for f in after
                        if f in before
                        and list(before[f]) != list(after[f])
                        and _content(before[f]) == _content(after[f])
                    ],
                ),
                ("added", [f for f in after if f not in before]),
                ("removed", [f for f in before if f not in after]),
            )
            if names
        ]
        notes.append(f"data in {params.get(name, '(no ' + name + ')')} ({name}) changed: {'; '.join(parts)}")
    return notes


def _content(entry: list) -> tuple:
    """(size, hash) of a `data_fingerprint` entry: what says its content changed."""
    return (entry[0], entry[2])


def _some(names: list[str], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _run_record(out: Path) -> dict[str, Any] | None:
    """What `run.json` records ({"params", "data"}); params from `params.yaml` for older runs."""
    if (out / RUN_RECORD).is_file():
        try:
            record = json.loads((out / RUN_RECORD).read_text(encoding="utf-8"))
            return record if isinstance(record, dict) else None
        except ValueError:
            return None
    params = _recorded_params(out)
    return None if params is None else {"params": params}


def _recorded_params(out: Path) -> dict[str, Any] | None:
    """The fingerprinted parameters of the run in `out`: `run.json`, else `params.yaml` (older runs)."""
    if (out / RUN_RECORD).is_file():
        return json.loads((out / RUN_RECORD).read_text(encoding="utf-8"))["params"]
    if (out / "params.yaml").is_file():
        return _fingerprinted(read_yaml(out / "params.yaml"))
    return None


def _differences(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """`name: old → new` for each parameter that differs (a missing one shows as `(absent)`)."""
    if old is None:
        return ["the parameters that made it are not recorded (no run.json or params.yaml)"]
    absent = "(absent)"
    return [
        f"{k}: {old.get(k, absent)!r} → {new.get(k, absent)!r}"
        for k in sorted(old.keys() | new.keys())
        if old.get(k, absent) != new.get(k, absent)
    ]


def write_yaml(path: str | Path, data: Mapping[str, Any]) -> None:
    _atomic_write_text(Path(path), yaml.safe_dump(_plain(data), sort_keys=False, allow_unicode=True))


def read_yaml(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def save_metrics(out_dir: str | Path, metrics: Mapping[str, Any]) -> Path:
    """Write `metrics.json`; non-finite floats become null so the file stays valid JSON."""
    clean = {  # a dry run (`vmmlib.dryrun`) says so first
        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
        for k, v in _plain(dryrun.mark_metrics(metrics)).items()
    }
    path = resolve_path(out_dir) / "metrics.json"
    _atomic_write_text(path, json.dumps(clean, indent=2, ensure_ascii=False))
    return path


def load_metrics(out_dir: str | Path) -> dict[str, Any]:
    path = resolve_path(out_dir) / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


OOF_FILE = "oof.npz"  # a fine-tuning or inference folder's out-of-fold predictions


def save_arrays(path: str | Path, arrays: Mapping[str, Any]) -> Path:
    """Write a dict of numpy arrays (predictions with their ids) to `path` (.npz), atomically."""
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{time.monotonic_ns()}.tmp.npz")
    np.savez(tmp, **{k: np.asarray(v) for k, v in arrays.items()})
    os.replace(tmp, path)
    return path


def load_arrays(path: str | Path) -> dict[str, Any]:
    """The arrays `save_arrays` wrote (no pickled objects are loaded)."""
    import numpy as np

    if not Path(path).is_file():
        raise FileNotFoundError(
            f"{path} not found: is its folder a finished run? (inference_dirs: 30_inference folders; "
            "objective_options teacher: an ensemble's teacher.npz)"
        )
    with np.load(Path(path), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
