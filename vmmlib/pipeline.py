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
vmmlib installed). `index.html`/`index.json` in the run folder list every step with its status,
duration and metrics.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import shutil
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vmmlib.runs import load_metrics, read_yaml, resolve_path

STEP_KEYS = {"name", "notebook", "params", "set", "after", "folds", "resources"}
PIPELINE_KEYS = {"run_dir", "workers", "data", "steps"}
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


def _notebook_defaults(notebook: Path) -> dict[str, Any]:
    import papermill

    info = papermill.inspect_notebook(str(notebook))
    if not info:
        raise ValueError(f"{notebook} has no cell tagged 'parameters'")
    return {name: _literal(p["default"]) for name, p in info.items()}


def _literal(text: str) -> Any:
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def load_pipeline(path: str | Path, *, workers: int | None = None) -> Pipeline:
    """Read a pipeline file and resolve every step's parameters (nothing runs).

    Raises:
        ValueError: unknown keys, unknown dependencies, cycles, or a parameter a notebook does not
            declare — the message lists the valid names.
    """
    path = resolve_path(path)
    spec = read_yaml(path)
    bad = set(spec) - PIPELINE_KEYS
    if bad:
        raise ValueError(
            f"{path}: unknown key(s) {', '.join(sorted(bad))}; valid keys: {', '.join(sorted(PIPELINE_KEYS))}"
        )
    run_dir = resolve_path(spec.get("run_dir", f"runs/{path.stem}"))
    data = spec.get("data")
    context = {"run_dir": str(run_dir), "data_dir": str(resolve_path(data["dir"])) if data else ""}
    steps: list[Step] = []
    groups: dict[str, list[str]] = {}  # declared name → expanded step names (folds)
    for raw in spec.get("steps") or []:
        bad = set(raw) - STEP_KEYS
        if bad:
            raise ValueError(
                f"step {raw.get('name')!r}: unknown key(s) {', '.join(sorted(bad))}; valid keys: {', '.join(sorted(STEP_KEYS))}"
            )
        name = raw["name"]
        if name in groups:
            raise ValueError(f"{path}: step {name!r} is declared twice")
        notebook = resolve_path(raw["notebook"])
        defaults = _notebook_defaults(notebook)
        base = dict(defaults)
        if raw.get("params"):
            from_file = read_yaml(resolve_path(raw["params"]))
            _check_names(from_file, defaults, f"{raw['params']}")
            base.update(from_file)
        after = []
        for dep in raw.get("after") or []:
            if dep not in groups:
                raise ValueError(
                    f"step {name!r} runs after unknown step {dep!r}; steps so far: {', '.join(groups) or 'none'}"
                )
            after += groups[dep]
        folds = raw.get("folds")
        instances = (
            [(f"{name}-fold{k}", {"fold": k, "n_folds": folds}) for k in range(folds)]
            if folds
            else [(name, {})]
        )
        groups[name] = [inst for inst, _ in instances]
        for inst, fold_ctx in instances:
            out_dir = run_dir / inst
            ctx = {**context, **fold_ctx, "out_dir": str(out_dir)}
            params = dict(base)
            overrides = _expand(dict(raw.get("set") or {}), ctx)
            overrides.update(fold_ctx)
            overrides["out_dir"] = str(out_dir)
            _check_names(overrides, defaults, f"step {inst}")
            params.update(overrides)
            steps.append(
                Step(
                    inst,
                    str(notebook),
                    str(out_dir),
                    params,
                    list(after),
                    dict(raw.get("resources") or {}),
                    os.getcwd(),
                )
            )
    workers = workers or int(spec.get("workers", 1))
    for step in steps:
        step.threads = max(1, (os.cpu_count() or 1) // workers)
    return Pipeline(path.stem, run_dir, workers, steps, data)


def _check_names(given: Mapping[str, Any], declared: Mapping[str, Any], where: str) -> None:
    unknown = set(given) - set(declared)
    if unknown:
        raise ValueError(
            f"{where}: unknown parameter(s) {', '.join(sorted(unknown))}; valid parameters: {', '.join(sorted(declared))}"
        )


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
) -> list[dict]:
    """Run a pipeline file; returns one result dict per step (see `run_step`) and writes the index.

    Args:
        scheduler: address of an existing Dask scheduler (`tcp://host:8786`); default: a local
            cluster of `workers` single-threaded worker processes (one GPU each when present).
        force: re-run steps even when their folder holds a finished result for the same fingerprint.
    """
    from dask.distributed import Client, LocalCluster, as_completed
    from tqdm.auto import tqdm

    pipe = load_pipeline(path, workers=workers)
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


def write_index(pipe: Pipeline, results: list[dict]) -> Path:
    """Write `index.json` and `index.html` listing every step with status, duration and metrics."""
    pipe.run_dir.mkdir(parents=True, exist_ok=True)
    (pipe.run_dir / "index.json").write_text(
        json.dumps({"pipeline": pipe.name, "steps": results}, indent=2, default=str)
    )
    rows = []
    for r in results:
        rel = lambda p: os.path.relpath(p, pipe.run_dir) if p else ""  # noqa: E731
        links = " ".join(
            f'<a href="{html.escape(rel(r[k]))}">{k}</a>'
            for k in ("html", "notebook")
            if r.get(k) and Path(r[k]).exists()
        )
        metrics = "<br>".join(
            f"{html.escape(str(k))} = {_fmt(v)}" for k, v in (r.get("metrics") or {}).items()
        )
        error = f'<pre class="err">{html.escape(r["error"])}</pre>' if r.get("error") else ""
        rows.append(
            f'<tr class="{r["status"]}"><td>{html.escape(r["name"])}</td><td>{r["status"]}</td>'
            f"<td>{r.get('duration_s', 0):.1f} s</td><td>{metrics}</td><td>{links}{error}</td></tr>"
        )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(pipe.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top}}
tr.ok td:nth-child(2),tr.cached td:nth-child(2){{color:green}}tr.failed td:nth-child(2),tr.blocked td:nth-child(2){{color:#b00}}pre.err{{color:#b00;white-space:pre-wrap}}</style>
</head><body><h1>Pipeline {html.escape(pipe.name)}</h1><p>{time.strftime("%Y-%m-%d %H:%M:%S")}</p>
<table><tr><th>step</th><th>status</th><th>duration</th><th>metrics</th><th>report</th></tr>{"".join(rows)}</table></body></html>"""
    path = pipe.run_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else html.escape(str(value))


def pipeline_summary(results: list[dict]) -> dict[str, Any]:
    return {
        "steps": len(results),
        **{s: sum(r["status"] == s for r in results) for s in (OK, CACHED, FAILED, BLOCKED)},
    }


__all__ = ["Pipeline", "Step", "load_pipeline", "run_pipeline", "run_step", "write_index", "fingerprint"]
