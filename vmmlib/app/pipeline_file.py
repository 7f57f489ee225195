"""Read and check a pipeline file (`params/pipelines/<name>.yaml`) before anything runs.

The file is user input: it is read through `vmmlib.io.safe.read_yaml`, and every way it can be
wrong — YAML syntax, a key of the wrong type (`run_dir: 5`), a step that is not a mapping, a step
name that is not a plain name (it becomes a folder under `run_dir`), unknown or cyclic
dependencies, a parameter the notebook does not declare or a value of the wrong type for its
annotation — is an `InputError` naming the file, the step or key, and the valid choices.
`vmmlib.app.pipeline.load_pipeline` is the entry point; this module holds its checks and what a
checked file becomes (`Pipeline`, its `Step`s).
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmmlib.io.safe import InputError, check_file, check_name, read_yaml
from vmmlib.runs import notebook_params


@dataclass
class Step:
    name: str  # unique: `finetune-fold3`
    notebook: str  # absolute path
    out_dir: str  # absolute path
    params: dict[str, Any]  # every notebook parameter, resolved
    after: list[str] = field(default_factory=list)  # names of the steps this one needs
    resources: dict[str, float] = field(default_factory=dict)
    cwd: str = "."
    threads: int = 1  # OMP_NUM_THREADS for the notebook's kernel
    group: str = ""  # the declared step it comes from: `finetune` for `finetune-fold3`
    run_dir: str = ""  # the pipeline's run folder: every path the runner writes lies below it


@dataclass
class Pipeline:
    name: str
    run_dir: Path
    workers: int
    steps: list[Step]
    data: dict[str, Any] | None = None
    track: str | None = None  # MLflow tracking URI each finished step is logged to (`vmmlib.app.track`)


STEP_KEYS = {"name", "notebook", "params", "set", "after", "folds", "resources"}
PIPELINE_KEYS = {"run_dir", "workers", "data", "settings", "steps", "track"}
DATA_KEYS = {"task", "dir", "sample"}


def expand(value: Any, context: Mapping[str, Any]) -> Any:
    """`{run_dir}`-style placeholders of `value` (strings, lists, dicts) filled from `context`.

    Only plain `{name}` fields: attribute or index access, conversions and format specs
    (`{run_dir:>99999999}` would allocate gigabytes) are refused with ValueError.
    """
    if isinstance(value, str):
        try:
            fields = [
                (f, spec, conv) for _, f, spec, conv in string.Formatter().parse(value) if f is not None
            ]
        except ValueError as e:
            raise ValueError(f"{value!r} is not a valid template ({e})") from None
        for name, spec, conv in fields:
            if name not in context or spec or conv:
                raise ValueError(
                    f"unknown placeholder {{{name}{'!' + conv if conv else ''}{':' + spec if spec else ''}}} "
                    f"in {value!r}; valid: {', '.join('{' + k + '}' for k in sorted(context))}"
                )
        return value.format(**context)
    if isinstance(value, list):
        return [expand(v, context) for v in value]
    if isinstance(value, dict):
        return {k: expand(v, context) for k, v in value.items()}
    return value


def notebook_parameters(notebook: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """A notebook's parameter defaults and their annotations (`papermill.inspect_notebook`).

    Raises:
        InputError: naming the notebook: unreadable, not a notebook, no parameters cell, or a
            parameter line papermill cannot parse.
    """
    check_file(notebook, what="notebook")
    try:
        import papermill

        info = papermill.inspect_notebook(str(notebook))
        assigned = _assigned_parameters(notebook) if info else []
    except Exception as e:  # not JSON, not a notebook, nested too deep, a syntax error in the cell, ...
        raise InputError(notebook, f"not a readable notebook ({type(e).__name__}: {str(e)[:200]})") from None
    if not info:
        raise InputError(notebook, "no cell tagged 'parameters'")
    unread = [name for name in assigned if name not in info]
    if unread:  # papermill would neither list nor inject them: say so now, not at run time
        raise InputError(
            notebook,
            f"papermill cannot parse the line(s) of parameter(s) {', '.join(unread)} in the parameters "
            "cell (its line parser trips on an '=' in a comment, e.g. '>=', and on annotations such as "
            "`str | None`); rewrite those lines",
        )
    defaults = {name: _literal(p["default"]) for name, p in info.items()}
    # papermill says "None" for a parameter without annotation: any value goes.
    annotations = {
        name: p["inferred_type_name"] for name, p in info.items() if p["inferred_type_name"] != "None"
    }
    return defaults, annotations


def _assigned_parameters(notebook: Path) -> list[str]:
    """Names the parameters cell assigns at top level, read with Python's own parser."""
    import ast

    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
    names = []
    for node in ast.parse(cell.source).body:
        targets = [node.target] if isinstance(node, ast.AnnAssign) else getattr(node, "targets", [])
        names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def _literal(text: str) -> Any:
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def read_spec(path: Path) -> dict[str, Any]:
    """The pipeline file as a mapping whose top-level keys have the right types."""
    spec = read_yaml(path, what="pipeline file")
    if not isinstance(spec, dict):
        raise InputError(
            path,
            f"a pipeline file is a mapping with keys {', '.join(sorted(PIPELINE_KEYS))}; got {_short(spec)}",
        )
    bad = [k for k in spec if k not in PIPELINE_KEYS]
    if bad:
        raise InputError(
            path,
            f"unknown key(s) {', '.join(map(repr, bad))}; valid keys: {', '.join(sorted(PIPELINE_KEYS))}",
        )
    if "run_dir" in spec and (not isinstance(spec["run_dir"], str) or not spec["run_dir"].strip()):
        raise InputError(
            path, f"run_dir must be a folder path (a string), got {_short(spec['run_dir'])}", "key 'run_dir'"
        )
    if "\x00" in spec.get("run_dir", ""):
        raise InputError(path, "run_dir holds a NUL byte", "key 'run_dir'")
    workers = spec.get("workers", 1)
    if not _whole(workers):
        raise InputError(path, f"workers must be a whole number ≥ 1, got {_short(workers)}", "key 'workers'")
    steps = spec.get("steps")
    if isinstance(steps, dict):
        raise InputError(
            path,
            f"steps must be a list, one `- name: …` entry per step; got a mapping with keys {', '.join(map(str, steps))}",
        )
    if not isinstance(steps, list) or not steps:
        raise InputError(
            path,
            f"steps must be a non-empty list, one `- name: …` entry per step; got {_short(steps)}",
        )
    return spec


def _text(value: Any) -> str:
    """A string as it is (when short), anything else as `_short` shows it."""
    return value if isinstance(value, str) and len(value) <= 200 and value.isprintable() else _short(value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "…"


def check_data(path: Path, data: Any) -> dict[str, Any] | None:
    """The optional `data:` section (task, dir, sample options), checked."""
    if data is None:
        return None
    from vmmlib.tasks import list_tasks

    where = "key 'data'"
    if not isinstance(data, dict) or not {"task", "dir"} <= set(data) or set(data) - DATA_KEYS:
        raise InputError(
            path,
            f"data must be a mapping with keys task, dir and optionally sample; got {_short(data)}",
            where,
        )
    if not isinstance(data["task"], str) or data["task"] not in list_tasks():
        raise InputError(
            path, f"unknown task {_short(data['task'])}; valid tasks: {', '.join(list_tasks())}", where
        )
    if not isinstance(data["dir"], str) or not data["dir"].strip() or "\x00" in data["dir"]:
        raise InputError(path, f"dir must be a folder path (a string), got {_short(data['dir'])}", where)
    sample = data.get("sample") or {}
    if not isinstance(sample, dict) or not all(isinstance(k, str) for k in sample):
        raise InputError(
            path, f"sample must be a mapping of sample-data options, got {_short(data['sample'])}", where
        )
    return data


def check_steps(path: Path, raws: list[Any]) -> list[dict[str, Any]]:
    """Check each declared step's own keys; return them (names plain and unique, types right)."""
    names: list[str] = []
    for i, raw in enumerate(raws, 1):
        if not isinstance(raw, dict):
            raise InputError(
                path,
                f"a step must be a mapping with keys {', '.join(sorted(STEP_KEYS))}; got {_short(raw)}",
                f"step #{i}",
            )
        name = raw.get("name")
        if name is None or (isinstance(name, str) and not name.strip()):
            raise InputError(
                path,
                f"step #{i} (notebook {_text(raw.get('notebook', '?'))}) has no name; every step needs a "
                f"unique `name:` (got {name!r})",
            )
        # The name becomes the folder `run_dir/<name>` that the runner writes and deletes.
        check_name(name, f"step #{i}: name", source=path)
        where = f"step {name!r}"
        if name in names:
            raise InputError(path, "declared twice", where)
        names.append(name)
        _check_step_keys(path, raw, where)
    for raw in raws:
        unknown = [a for a in raw.get("after") or [] if a not in names]
        if unknown:
            raise InputError(
                path,
                f"step {raw['name']!r} runs after unknown step {', '.join(map(repr, unknown))}; steps: {', '.join(names)}",
            )
    return raws


def _check_step_keys(path: Path, raw: dict[str, Any], where: str) -> None:
    bad = [k for k in raw if k not in STEP_KEYS]
    if bad:
        raise InputError(
            path,
            f"unknown key(s) {', '.join(map(repr, bad))}; valid keys: {', '.join(sorted(STEP_KEYS))}",
            where,
        )
    notebook = raw.get("notebook")
    if not isinstance(notebook, str) or not notebook.strip() or "\x00" in notebook:
        raise InputError(path, f"notebook must be the path of a notebook, got {_short(notebook)}", where)
    params = raw.get("params")
    if params is not None and (not isinstance(params, str) or "\x00" in params):
        raise InputError(path, f"params must be the path of a YAML file, got {_short(params)}", where)
    folds = raw.get("folds")
    if folds is not None and not _whole(folds):
        raise InputError(
            path,
            f"folds must be a whole number ≥ 1 (one step per fold), got {folds!r}"
            f"{' (a string)' if isinstance(folds, str) else ''}; leave it out for a step without folds",
            where,
        )
    for key in ("set", "resources"):
        value = raw.get(key) or {}
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise InputError(path, f"{key} must be a mapping of name: value, got {_short(raw[key])}", where)
    for key, amount in (raw.get("resources") or {}).items():
        ok = isinstance(amount, (int, float)) and not isinstance(amount, bool) and math.isfinite(amount)
        if not ok or amount < 0:
            raise InputError(path, f"resources: {key} must be a number ≥ 0, got {_short(amount)}", where)
    after = raw.get("after") or []
    if not isinstance(after, list) or not all(isinstance(a, str) for a in after):
        raise InputError(
            path, f"after must be a list of step names, e.g. [pretrain]; got {_short(after)}", where
        )


def in_dependency_order(path: Path, raws: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The steps ordered so that each comes after its `after` steps; a cycle is an error naming it."""
    by_name = {raw["name"]: raw for raw in raws}
    ordered: list[dict[str, Any]] = []
    state: dict[str, str] = {}  # name → "visiting" | "done"

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = trail[trail.index(name) :] + [name]
            raise InputError(
                path,
                f"steps {', '.join(sorted(set(cycle)))} form a dependency cycle: "
                f"{' → '.join(cycle)} (→ reads 'runs after'); remove one of these `after` entries",
            )
        state[name] = "visiting"
        for dep in by_name[name].get("after") or []:
            visit(dep, [*trail, name])
        state[name] = "done"
        ordered.append(by_name[name])

    for raw in raws:
        visit(raw["name"], [])
    return ordered


def read_params_file(path: Path, where: str, params_file: Path) -> dict[str, Any]:
    """A step's parameter file: a mapping of parameter names to values."""
    if not params_file.is_file():
        raise InputError(path, f"params file {params_file} does not exist", where)
    values = read_yaml(params_file, what="params file")
    if values is None:
        raise InputError(
            params_file, "params file is empty; leave `params:` out of the step to use the defaults"
        )
    if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
        raise InputError(params_file, f"a params file maps parameter names to values; got {_short(values)}")
    return values


def check_values(
    given: Mapping[str, Any],
    defaults: Mapping[str, Any],
    annotations: Mapping[str, str],
    path: str | Path,
    where: str,
) -> None:
    """Names the notebook declares, values of the types its parameters cell annotates."""
    unknown = set(given) - set(defaults)
    if unknown:
        raise InputError(
            path,
            f"unknown parameter(s) {', '.join(sorted(unknown))}; valid parameters: {', '.join(sorted(defaults))}",
            where,
        )
    typed = {k: v for k, v in annotations.items() if k in given}
    if typed:
        try:  # the notebook's own check (`notebook_params`), run now instead of when the step starts
            notebook_params({"__annotations__": typed, **given})
        except ValueError as e:
            raise InputError(path, str(e), where) from None
