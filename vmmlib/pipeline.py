"""Run the notebook DAG (explore → pretrain → finetune per fold → inference → ensemble) with papermill.

A pipeline file (`params/pipelines/<name>.yaml`) names the steps, their notebooks, their parameter
files and their dependencies:

    run_dir: runs/qqbrowser_sample
    workers: 2                       # local Dask workers (folds run in parallel up to this)
    data:                            # optional: sample data made first when `dir` is missing
      task: qqbrowser
      dir: data/sample/qqbrowser
      sample: {videos: 600, seed: 0}
    steps:
      - name: finetune
        notebook: notebooks/20_finetune.ipynb
        params: params/qqbrowser/finetune.yaml
        set: {pretrain_dir: "{run_dir}/pretrain"}   # {run_dir} {data_dir} {fold} {n_folds} expand
        after: [pretrain]
        folds: 5                     # one step per fold: finetune-fold0 … finetune-fold4
        resources: {GPU: 1}          # Dask worker resources the step needs

Every step writes `runs/<run>/<step>[-fold<k>]/`: the executed notebook and its HTML, the
notebook's own `params.yaml`/`metrics.json`/…, and `status.json` with a fingerprint of the
parameters, the notebook and the upstream steps; a step whose folder already holds a finished
result with the same fingerprint is skipped. The DAG runs on Dask: a local cluster by default, or
an existing cluster given by its scheduler address (workers must share the file system and have
vmmlib installed). `index.html`/`index.json` in the run folder open with a leaderboard (per model:
the task metric per fold, fold mean ± sd, out of fold; the ensemble; a bar chart, see
`vmmlib.leaderboard`), then list every step with its status, duration and metrics.

`load_pipeline` checks the whole file before anything runs — step names, `steps` a list, `folds`
a whole number ≥ 1, dependencies known and acyclic (steps may be declared in any order), every
`set:` and params-file value a parameter of the notebook with the type its parameters cell
annotates — and each error names the file, the step and the valid choices.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmmlib.leaderboard import write_index
from vmmlib.pipeline_settings import apply_settings, dry_run_dir, mark_dry_run
from vmmlib.runs import load_metrics, notebook_params, read_yaml, resolve_path

STEP_KEYS = {"name", "notebook", "params", "set", "after", "folds", "resources"}
PIPELINE_KEYS = {"run_dir", "workers", "data", "settings", "steps"}
DATA_KEYS = {"task", "dir", "sample"}
OK, CACHED, FAILED, BLOCKED = "ok", "cached", "failed", "blocked"


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


@dataclass
class Pipeline:
    name: str
    run_dir: Path
    workers: int
    steps: list[Step]
    data: dict[str, Any] | None = None


def _expand(value: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        try:
            return value.format(**context)
        except (KeyError, IndexError) as e:
            raise ValueError(
                f"unknown placeholder {e} in {value!r}; valid: {', '.join(sorted(context))}"
            ) from None
    if isinstance(value, list):
        return [_expand(v, context) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, context) for k, v in value.items()}
    return value


def _notebook_params(notebook: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """A notebook's parameter defaults and their annotations (`papermill.inspect_notebook`)."""
    import papermill

    info = papermill.inspect_notebook(str(notebook))
    if not info:
        raise ValueError(f"{notebook} has no cell tagged 'parameters'")
    unread = [name for name in _assigned_parameters(notebook) if name not in info]
    if unread:  # papermill would neither list nor inject them: say so now, not at run time
        raise ValueError(
            f"papermill cannot parse the line(s) of parameter(s) {', '.join(unread)} in the parameters "
            "cell (its line parser trips on an '=' in a comment, e.g. '>=', and on annotations such as "
            "`str | None`); rewrite those lines"
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
    except (ValueError, SyntaxError):
        return text


def load_pipeline(
    path: str | Path,
    *,
    workers: int | None = None,
    settings: Mapping[str, str] | None = None,
    dry_run: bool = False,
) -> Pipeline:
    """Read a pipeline file, check it whole and resolve every step's parameters (nothing runs).

    Steps may be declared in any order; they come back in dependency order (declaration order
    where free), fold steps expanded. `settings` override the file's `settings:` (`--set`, see
    `vmmlib.pipeline_settings`); `dry_run` makes every step a dry run in `<run_dir>-dry-run`.

    Raises:
        ValueError: anything a run would trip over later, naming the file, the step and the valid
            choices: keys that do not exist, a step without a name, `steps` not a list, `folds`
            not a whole number ≥ 1, an unknown or cyclic dependency, a parameter the notebook does
            not declare or a value of the wrong type for its annotation.
    """
    path = resolve_path(path)
    spec = _read_spec(path)
    context = apply_settings(path, spec, settings)
    run_dir = resolve_path(spec.get("run_dir", f"runs/{path.stem}"))
    run_dir = dry_run_dir(run_dir) if dry_run else run_dir
    data = _check_data(path, spec.get("data"))
    data_dir = (
        resolve_path(data["dir"]) if data else context.get("data_dir") and resolve_path(context["data_dir"])
    )
    context = {**context, "run_dir": str(run_dir), "data_dir": str(data_dir or "")}
    steps: list[Step] = []
    groups: dict[str, list[str]] = {}  # declared name → expanded step names (folds)
    for raw in _in_dependency_order(path, _check_steps(path, spec["steps"])):
        expanded = _expand_step(path, raw, context, run_dir, groups)
        groups[raw["name"]] = [s.name for s in expanded]
        steps += expanded
    clash = sorted({s.name for s in steps if [t.name for t in steps].count(s.name) > 1})
    if clash:
        raise ValueError(f"{path}: step name(s) {', '.join(clash)} occur twice once folds are expanded")
    workers = workers or spec.get("workers", 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"{path}: workers must be a whole number ≥ 1, got {workers!r}")
    for step in steps:
        step.threads = max(1, (os.cpu_count() or 1) // workers)
    if dry_run:
        mark_dry_run(path, steps)
    return Pipeline(path.stem, run_dir, workers, steps, data)


def _read_spec(path: Path) -> dict[str, Any]:
    spec = read_yaml(path)
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: a pipeline file is a mapping with keys {', '.join(sorted(PIPELINE_KEYS))}")
    bad = set(spec) - PIPELINE_KEYS
    if bad:
        raise ValueError(
            f"{path}: unknown key(s) {', '.join(sorted(bad))}; valid keys: {', '.join(sorted(PIPELINE_KEYS))}"
        )
    steps = spec.get("steps")
    if isinstance(steps, dict):
        raise ValueError(
            f"{path}: steps must be a list, one `- name: …` entry per step; got a mapping with keys "
            f"{', '.join(map(str, steps))}"
        )
    if not isinstance(steps, list) or not steps:
        raise ValueError(
            f"{path}: steps must be a non-empty list, one `- name: …` entry per step; got {steps!r}"
        )
    return spec


def _check_data(path: Path, data: Any) -> dict[str, Any] | None:
    if data is None:
        return None
    from vmmlib.tasks import list_tasks

    if not isinstance(data, dict) or not {"task", "dir"} <= set(data) or set(data) - DATA_KEYS:
        raise ValueError(
            f"{path}: data must be a mapping with keys task, dir and optionally sample; got {data!r}"
        )
    if data["task"] not in list_tasks():
        raise ValueError(
            f"{path}: data: unknown task {data['task']!r}; valid tasks: {', '.join(list_tasks())}"
        )
    if not isinstance(data.get("sample") or {}, dict):
        raise ValueError(
            f"{path}: data: sample must be a mapping of sample-data options, got {data['sample']!r}"
        )
    return data


def _check_steps(path: Path, raws: list[Any]) -> list[dict[str, Any]]:
    """Check each declared step's own keys; return them (names unique, types right)."""
    names: list[str] = []
    for i, raw in enumerate(raws, 1):
        if not isinstance(raw, dict):
            raise ValueError(
                f"{path}: step #{i} must be a mapping with keys {', '.join(sorted(STEP_KEYS))}; got {raw!r}"
            )
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ValueError(
                f"{path}: step #{i} (notebook {raw.get('notebook', '?')}) has no name; every step needs a "
                f"unique `name:` (got {name!r})"
            )
        where = f"{path}: step {name!r}"
        if name in names:
            raise ValueError(f"{where} is declared twice")
        names.append(name)
        bad = set(raw) - STEP_KEYS
        if bad:
            raise ValueError(
                f"{where}: unknown key(s) {', '.join(sorted(bad))}; valid keys: {', '.join(sorted(STEP_KEYS))}"
            )
        if not isinstance(raw.get("notebook"), str):
            raise ValueError(f"{where}: notebook must be the path of a notebook, got {raw.get('notebook')!r}")
        folds = raw.get("folds")
        if folds is not None and (isinstance(folds, bool) or not isinstance(folds, int) or folds < 1):
            raise ValueError(
                f"{where}: folds must be a whole number ≥ 1 (one step per fold), got {folds!r}"
                f"{' (a string)' if isinstance(folds, str) else ''}; leave it out for a step without folds"
            )
        for key in ("set", "resources"):
            if not isinstance(raw.get(key) or {}, dict):
                raise ValueError(f"{where}: {key} must be a mapping of name: value, got {raw[key]!r}")
        after = raw.get("after") or []
        if not isinstance(after, list) or not all(isinstance(a, str) for a in after):
            raise ValueError(f"{where}: after must be a list of step names, e.g. [pretrain]; got {after!r}")
    for raw in raws:
        unknown = [a for a in raw.get("after") or [] if a not in names]
        if unknown:
            raise ValueError(
                f"{path}: step {raw['name']!r} runs after unknown step {', '.join(map(repr, unknown))}; "
                f"steps: {', '.join(names)}"
            )
    return raws


def _in_dependency_order(path: Path, raws: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The steps ordered so that each comes after its `after` steps; a cycle is an error naming it."""
    by_name = {raw["name"]: raw for raw in raws}
    ordered: list[dict[str, Any]] = []
    state: dict[str, str] = {}  # name → "visiting" | "done"

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = trail[trail.index(name) :] + [name]
            raise ValueError(
                f"{path}: steps {', '.join(sorted(set(cycle)))} form a dependency cycle: "
                f"{' → '.join(cycle)} (→ reads 'runs after'); remove one of these `after` entries"
            )
        state[name] = "visiting"
        for dep in by_name[name].get("after") or []:
            visit(dep, [*trail, name])
        state[name] = "done"
        ordered.append(by_name[name])

    for raw in raws:
        visit(raw["name"], [])
    return ordered


def _expand_step(
    path: Path,
    raw: dict[str, Any],
    context: Mapping[str, str],
    run_dir: Path,
    groups: Mapping[str, list[str]],
) -> list[Step]:
    """One declared step → its Step per fold, parameters resolved and checked against the notebook."""
    name = raw["name"]
    where = f"{path}: step {name!r}"
    notebook = resolve_path(raw["notebook"])
    if not notebook.is_file():
        raise ValueError(f"{where}: notebook {notebook} does not exist")
    try:
        defaults, annotations = _notebook_params(notebook)
    except Exception as e:  # not a notebook, no parameters cell, ...
        raise ValueError(f"{where}: notebook {notebook}: {e}") from None
    base = dict(defaults)
    if raw.get("params"):
        params_file = resolve_path(raw["params"])
        if not params_file.is_file():
            raise ValueError(f"{where}: params file {params_file} does not exist")
        from_file = read_yaml(params_file)
        if not isinstance(from_file, dict):
            raise ValueError(f"{where}: params file {params_file} must map parameter names to values")
        _check_values(from_file, defaults, annotations, f"{where}: params {raw['params']}")
        base.update(from_file)
    after = [inst for dep in raw.get("after") or [] for inst in groups[dep]]
    folds = raw.get("folds")
    instances = (
        [(f"{name}-fold{k}", {"fold": k, "n_folds": folds}) for k in range(folds)] if folds else [(name, {})]
    )
    steps = []
    for inst, fold_ctx in instances:
        out_dir = run_dir / inst
        ctx = {**context, **fold_ctx, "out_dir": str(out_dir)}
        try:
            overrides = _expand(dict(raw.get("set") or {}), ctx)
        except ValueError as e:
            raise ValueError(f"{where}: set: {e}") from None
        overrides.update(fold_ctx)
        overrides["out_dir"] = str(out_dir)
        _check_values(
            overrides, defaults, annotations, f"{where}: set" if inst == name else f"{where}: set ({inst})"
        )
        steps.append(
            Step(inst, str(notebook), str(out_dir), {**base, **overrides}, list(after),
                 dict(raw.get("resources") or {}), os.getcwd(), group=name)
        )  # fmt: skip
    return steps


def _check_values(
    given: Mapping[str, Any], defaults: Mapping[str, Any], annotations: Mapping[str, str], where: str
) -> None:
    """Names the notebook declares, values of the types its parameters cell annotates."""
    unknown = set(given) - set(defaults)
    if unknown:
        raise ValueError(
            f"{where}: unknown parameter(s) {', '.join(sorted(unknown))}; valid parameters: {', '.join(sorted(defaults))}"
        )
    typed = {k: v for k, v in annotations.items() if k in given}
    if typed:
        try:  # the notebook's own check (`notebook_params`), run now instead of when the step starts
            notebook_params({"__annotations__": typed, **given})
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None


def fingerprint(step: Step, upstream: list[str]) -> str:
    """Hash of the resolved parameters, the notebook file and the upstream steps' fingerprints."""
    h = hashlib.sha256()
    h.update(json.dumps(step.params, sort_keys=True, default=str).encode())
    h.update(Path(step.notebook).read_bytes())
    for up in sorted(upstream):
        h.update(up.encode())
    return h.hexdigest()[:16]


def run_step(step: Step, *upstream: dict, force: bool = False) -> dict:
    """Execute one notebook with papermill (runs on a Dask worker); never raises.

    Returns:
        A result dict: name, status (ok | cached | failed | blocked), duration_s, metrics,
        fingerprint, notebook/html paths and, on failure, the error and the notebook path.
    """
    out = Path(step.out_dir)
    stem = Path(step.notebook).stem
    result = {
        "name": step.name,
        "out_dir": str(out),
        "notebook": str(out / f"{stem}.ipynb"),
        "html": str(out / f"{stem}.html"),
        "duration_s": 0.0,
        "metrics": {},
        "error": None,
    }
    failed_up = [u["name"] for u in upstream if u["status"] in (FAILED, BLOCKED)]
    if failed_up:
        return {
            **result,
            "status": BLOCKED,
            "error": f"not run: upstream step(s) {', '.join(failed_up)} did not finish",
        }
    result["fingerprint"] = fp = fingerprint(step, [u["fingerprint"] for u in upstream])
    status_path = out / "status.json"
    previous = json.loads(status_path.read_text()) if status_path.exists() else {}
    same = previous.get("fingerprint") == fp
    if not force and same and previous.get("status") == OK and Path(result["notebook"]).exists():
        return {**previous, "status": CACHED}
    if out.exists() and (force or not same):
        # Other parameters (or --force): start clean, so training does not resume from the old
        # run's checkpoints. The same parameters after a kill keep the folder and resume.
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    status_path.write_text(json.dumps({"name": step.name, "status": "running", "fingerprint": fp}))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # One BLAS/torch thread per step per core share: steps run side by side on the workers.
    os.environ.setdefault("OMP_NUM_THREADS", str(step.threads))
    start = time.time()
    try:
        import papermill
        from papermill.exceptions import PapermillExecutionError

        try:
            papermill.execute_notebook(
                step.notebook, result["notebook"], parameters=step.params, kernel_name="python3",
                progress_bar=False, cwd=step.cwd,
            )  # fmt: skip
            result["status"] = OK
        except PapermillExecutionError as e:
            result["status"] = FAILED
            result["error"] = f"{e.ename}: {e.evalue} (cell {e.exec_count}; see {result['notebook']})"
    except Exception as e:  # kernel died, notebook unreadable, ...
        result["status"] = FAILED
        result["error"] = (
            f"{type(e).__name__}: {e} (see {result['notebook']})\n{traceback.format_exc(limit=3)}"
        )
    result["duration_s"] = round(time.time() - start, 2)
    _export_html(result)
    result["metrics"] = load_metrics(out)
    status_path.write_text(json.dumps(result, indent=2, default=str))
    return result


def _export_html(result: dict) -> None:
    if not Path(result["notebook"]).exists():
        return
    try:
        import nbformat
        from nbconvert import HTMLExporter

        body, _ = HTMLExporter().from_notebook_node(nbformat.read(result["notebook"], as_version=4))
        Path(result["html"]).write_text(body, encoding="utf-8")
    except Exception as e:  # a report we cannot render must not fail the step
        result["html_error"] = f"{type(e).__name__}: {e}"


def _local_resources() -> dict[str, float]:
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:
        gpus = 0
    return {"GPU": 1} if gpus else {}


def run_pipeline(
    path: str | Path,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
    settings: Mapping[str, str] | None = None,
    dry_run: bool = False,
) -> list[dict]:
    """Run a pipeline file; returns one result dict per step (see `run_step`) and writes the index.

    Args:
        scheduler: address of an existing Dask scheduler (`tcp://host:8786`); default: a local
            cluster of `workers` single-threaded worker processes (one GPU each when present).
        force: re-run steps even when their folder holds a finished result for the same fingerprint.
        settings, dry_run: see `load_pipeline`.
    """
    from dask.distributed import Client, LocalCluster, as_completed
    from tqdm.auto import tqdm

    pipe = load_pipeline(path, workers=workers, settings=settings, dry_run=dry_run)
    _ensure_data(pipe)
    if scheduler:
        cluster, client = None, Client(scheduler)
    else:
        cluster = LocalCluster(
            n_workers=pipe.workers, threads_per_worker=1, processes=True, dashboard_address=":0",
            resources=_local_resources() or None,
        )  # fmt: skip
        client = Client(cluster)
    try:
        _check_resources(client, pipe.steps)
        futures = {}
        for step in pipe.steps:
            futures[step.name] = client.submit(
                run_step, step, *[futures[d] for d in step.after], force=force,
                key=f"{pipe.name}-{step.name}-{time.time_ns()}", resources=step.resources or None, pure=False,
            )  # fmt: skip
        results: dict[str, dict] = {}
        bar = tqdm(total=len(futures), desc=f"pipeline {pipe.name}", disable=not progress, unit="step")
        for future in as_completed(list(futures.values())):
            r = future.result()
            results[r["name"]] = r
            bar.update(1)
            line = f"{r['name']}: {r['status']} ({r['duration_s']:.1f} s)"
            if r["error"]:
                line += f"\n    {r['error']}"
            bar.write(line)
            write_index(pipe, [results.get(s.name) or _pending(s) for s in pipe.steps])
        bar.close()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    ordered = [results[s.name] for s in pipe.steps]
    write_index(pipe, ordered)
    return ordered


def _pending(step: Step) -> dict:
    return {"name": step.name, "status": "pending", "duration_s": 0.0, "metrics": {}, "error": None}


def read_results(pipe: Pipeline) -> list[dict]:
    """Each step's last result as its folder's `status.json` holds it (pending where none), e.g. to
    write the index of a run again: `write_index(pipe, read_results(pipe))`."""
    results = []
    for step in pipe.steps:
        path = Path(step.out_dir) / "status.json"
        status = json.loads(path.read_text()) if path.exists() else {}
        results.append({**_pending(step), **status})
    return results


def _check_resources(client, steps: list[Step]) -> None:
    wanted = {k for s in steps for k in s.resources}
    if not wanted:
        return
    have = set()
    for info in client.scheduler_info()["workers"].values():
        have |= set(info.get("resources", {}))
    missing = wanted - have
    if missing:
        raise RuntimeError(
            f"steps ask for worker resource(s) {', '.join(sorted(missing))} that no worker offers "
            f"(workers offer: {', '.join(sorted(have)) or 'none'})"
        )


def _ensure_data(pipe: Pipeline) -> None:
    if not pipe.data:
        return
    from vmmlib.tasks import get_task

    target = resolve_path(pipe.data["dir"])
    if not target.exists():
        print(f"making {pipe.data['task']} sample data in {target}")
        get_task(pipe.data["task"]).make_sample(target, **(pipe.data.get("sample") or {}))


def pipeline_summary(results: list[dict]) -> dict[str, Any]:
    return {
        "steps": len(results),
        **{s: sum(r["status"] == s for r in results) for s in (OK, CACHED, FAILED, BLOCKED)},
    }


__all__ = [
    "Pipeline",
    "Step",
    "load_pipeline",
    "read_results",
    "run_pipeline",
    "run_step",
    "write_index",
    "fingerprint",
]
