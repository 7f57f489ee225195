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
parameters, the notebook and the upstream steps, and one of the data its parameters name
(`vmmlib.runs.data_fingerprint`); a step whose folder already holds a finished result with the same
fingerprints is skipped. Every path the runner writes or deletes goes through
`vmmlib.runs.in_run_dir`: nothing outside `run_dir`, whatever the pipeline file says. The DAG runs on Dask: a local cluster by default, or
an existing cluster given by its scheduler address (workers must share the file system and have
vmmlib installed). `index.html`/`index.json` in the run folder open with a leaderboard (per model:
the task metric per fold, fold mean ± sd, out of fold; the ensemble; a bar chart, see
`vmmlib.app.leaderboard`), then list every step with its status, duration and metrics.

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
import tempfile
import time
import traceback
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vmmlib.app import pipeline_file as pf
from vmmlib.app.leaderboard import write_index
from vmmlib.app.pipeline_file import Pipeline, Step
from vmmlib.app.pipeline_log import TOPIC, StepConsole, announce_start
from vmmlib.app.pipeline_settings import apply_settings, dry_run_dir, mark_dry_run
from vmmlib.io.safe import InputError
from vmmlib.runs import data_fingerprint, data_paths, in_run_dir, load_metrics, resolve_path

OK, CACHED, FAILED, BLOCKED = "ok", "cached", "failed", "blocked"


def load_pipeline(
    path: str | Path,
    *,
    workers: int | None = None,
    settings: Mapping[str, str] | None = None,
    dry_run: bool = False,
) -> Pipeline:
    """Read a pipeline file, check it whole and resolve every step's parameters (nothing runs).

    Steps may be declared in any order; they come back in dependency order (declaration order
    where free), fold steps expanded. The checks live in `vmmlib.app.pipeline_file`. `settings` override
    the file's `settings:` (`--set`, `vmmlib.app.pipeline_settings`); `dry_run` makes every step a dry
    run in `<run_dir>-dry-run`.

    Raises:
        InputError: anything a run would trip over later, naming the file, the step and the valid
            choices: invalid YAML, keys that do not exist or have the wrong type (`run_dir: 5`), a
            step that is not a mapping, a step without a plain name (`[A-Za-z0-9_.-]`, not `.` or
            `..`: it becomes a folder under `run_dir`), `steps` not a list, `folds` not a whole
            number ≥ 1, an unknown or cyclic dependency, a parameter the notebook does not declare
            or a value of the wrong type for its annotation.
    """
    path = resolve_path(path)
    spec = pf.read_spec(path)
    context = apply_settings(path, spec, settings)
    run_dir = resolve_path(spec.get("run_dir", f"runs/{path.stem}")).resolve()
    run_dir = dry_run_dir(run_dir) if dry_run else run_dir
    data = pf.check_data(path, spec.get("data"))
    data_dir = (
        resolve_path(data["dir"]) if data else context.get("data_dir") and resolve_path(context["data_dir"])
    )
    context = {**context, "run_dir": str(run_dir), "data_dir": str(data_dir or "")}
    steps: list[Step] = []
    groups: dict[str, list[str]] = {}  # declared name → expanded step names (folds)
    for raw in pf.in_dependency_order(path, pf.check_steps(path, spec["steps"])):
        expanded = _expand_step(path, raw, context, run_dir, groups)
        groups[raw["name"]] = [s.name for s in expanded]
        steps += expanded
    clash = sorted({s.name for s in steps if [t.name for t in steps].count(s.name) > 1})
    if clash:
        raise InputError(path, f"step name(s) {', '.join(clash)} occur twice once folds are expanded")
    workers = workers or spec.get("workers", 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a whole number ≥ 1, got {workers!r}")
    for step in steps:
        step.threads = max(1, (os.cpu_count() or 1) // workers)
    if dry_run:
        mark_dry_run(path, steps)
    track = spec.get("track")
    if track is not None and not isinstance(track, str):
        raise InputError(
            path, f"track must be an MLflow tracking URI such as sqlite:///runs/mlflow.db, got {track!r}"
        )
    return Pipeline(path.stem, run_dir, workers, steps, data, track)


def _expand_step(
    path: Path,
    raw: dict[str, Any],
    context: Mapping[str, str],
    run_dir: Path,
    groups: Mapping[str, list[str]],
) -> list[Step]:
    """One declared step → its Step per fold, parameters resolved and checked against the notebook."""
    name = raw["name"]
    where = f"step {name!r}"
    notebook = resolve_path(raw["notebook"])
    if not notebook.is_file():
        raise InputError(path, f"notebook {notebook} does not exist", where)
    try:
        defaults, annotations = pf.notebook_parameters(notebook)
    except InputError as e:  # not a notebook, no parameters cell, ...
        raise InputError(path, f"notebook {e}", where) from None
    base = dict(defaults)
    if raw.get("params"):
        from_file = pf.read_params_file(path, where, resolve_path(raw["params"]))
        pf.check_values(from_file, defaults, annotations, path, f"{where}: params {raw['params']}")
        base.update(from_file)
    after = [inst for dep in raw.get("after") or [] for inst in groups[dep]]
    folds = raw.get("folds")
    instances = (
        [(f"{name}-fold{k}", {"fold": k, "n_folds": folds}) for k in range(folds)] if folds else [(name, {})]
    )
    steps = []
    for inst, fold_ctx in instances:
        out_dir = in_run_dir(run_dir, inst, what=f"{path}: step {inst!r}: folder")
        ctx = {**context, **fold_ctx, "out_dir": str(out_dir)}
        try:
            overrides = pf.expand(dict(raw.get("set") or {}), ctx)
        except ValueError as e:
            raise InputError(path, f"set: {e}", where) from None
        overrides.update(fold_ctx)
        overrides["out_dir"] = str(out_dir)
        pf.check_values(
            overrides, defaults, annotations, path, f"{where}: set" + ("" if inst == name else f" ({inst})")
        )
        steps.append(
            Step(inst, str(notebook), str(out_dir), {**base, **overrides}, list(after),
                 dict(raw.get("resources") or {}), os.getcwd(), group=name, run_dir=str(run_dir))
        )  # fmt: skip
    return steps


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
    stem = Path(step.notebook).stem
    result = {
        "name": step.name,
        "out_dir": step.out_dir,
        "notebook": str(Path(step.out_dir) / f"{stem}.ipynb"),
        "html": str(Path(step.out_dir) / f"{stem}.html"),
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
    try:  # every path this step writes or deletes, resolved now and refused outside the run folder
        out = _in_run(step, step.out_dir)
        status_path, notebook_out, html_out = (
            _in_run(step, out / name) for name in ("status.json", f"{stem}.ipynb", f"{stem}.html")
        )
    except InputError as e:
        return {**result, "status": FAILED, "error": f"not run: {e}"}
    result.update(out_dir=str(out), notebook=str(notebook_out), html=str(html_out))
    result["fingerprint"] = fp = fingerprint(step, [u["fingerprint"] for u in upstream])
    previous = _read_status(status_path)
    # The data its parameters name (`data_dir`, …) as it is now: regenerated data re-runs the step.
    data_fp = _data_print(step)
    same = previous.get("fingerprint") == fp and previous.get("data_fingerprint", data_fp) == data_fp
    if not force and same and previous.get("status") == OK and notebook_out.exists():
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
    os.environ.setdefault("VMM_PROGRESS", "lines")  # progress as text lines in the notebook, no widget
    announce_start(step.name)
    start = time.time()
    try:
        import papermill
        from papermill.exceptions import PapermillExecutionError

        try:
            papermill.execute_notebook(
                step.notebook, result["notebook"], parameters=step.params, kernel_name="python3",
                progress_bar=False, cwd=step.cwd, **_kernel_options(),
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
    result["data_fingerprint"] = _data_print(step)  # after the run: data it made itself counts
    status_path.write_text(json.dumps(result, indent=2, default=str))
    return result


def _kernel_options() -> dict:
    """Start step kernels over IPC (local unix sockets) where the system has them: over TCP without
    CurveZMQ keys, ipykernel ≥ 7 logs a warning about unencrypted traffic for every kernel it starts."""
    if os.name != "posix":
        return {}
    from jupyter_client.manager import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):  # nbclient's default manager, transport "ipc"
        def __init__(self, **kwargs):
            kwargs.setdefault("transport", "ipc")
            # Each kernel its own socket files: the default (`kernel-ipc-N` in the working folder)
            # is shared by steps that start together, whose messages then cross ("Invalid Signature").
            kwargs.setdefault("ip", os.path.join(tempfile.gettempdir(), f"vmm-kernel-{uuid.uuid4().hex}"))
            super().__init__(**kwargs)

    return {"kernel_manager_class": IPCKernelManager}


def _data_print(step: Step) -> str:
    """A hash of `vmmlib.runs.data_fingerprint` over the data parameters of the step."""
    data = {k: data_fingerprint(resolve_path(v)) for k, v in data_paths(step.params).items()}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _in_run(step: Step, path: str | Path) -> Path:
    """`path` if it lies strictly below the step's run folder (`vmmlib.runs.in_run_dir`)."""
    if not step.run_dir:
        raise InputError(step.out_dir, f"step {step.name!r} has no run folder to keep its writes in")
    return in_run_dir(step.run_dir, path, what=f"step {step.name!r}: path")


def _read_status(path: Path) -> dict:
    """A step folder's `status.json`; {} when missing or unreadable (a kill mid-write): run again."""
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return status if isinstance(status, dict) else {}


def _export_html(result: dict) -> None:
    if not Path(result["notebook"]).exists():
        return
    try:  # the summary (metric, baseline, warnings) first, code folded: `vmmlib.app.report`
        from vmmlib.app.report import export_report

        export_report(result["notebook"], result["html"], result["out_dir"])
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
    track: str | None = None,
    settings: Mapping[str, str] | None = None,
    dry_run: bool = False,
) -> list[dict]:
    """Run a pipeline file; returns one result dict per step (see `run_step`) and writes the index.

    Args:
        scheduler: address of an existing Dask scheduler (`tcp://host:8786`); default: a local
            cluster of `workers` single-threaded worker processes (one GPU each when present).
        force: re-run steps even when their folder holds a finished result for the same fingerprint.
        progress: print each step's start and end as it happens (`vmmlib.app.pipeline_log`).
        track: an MLflow tracking URI (default: the pipeline file's `track`): each finished step is
            logged as one MLflow run (`vmmlib.app.track.track_step`).
        settings, dry_run: see `load_pipeline`.
    """
    from dask.distributed import Client, LocalCluster, as_completed

    pipe = load_pipeline(path, workers=workers, settings=settings, dry_run=dry_run)
    track = track or pipe.track
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
        console = StepConsole(pipe.name, len(futures), enabled=progress)
        console.begin(pipe.workers)
        client.subscribe_topic(TOPIC, console.on_event)
        for future in as_completed(list(futures.values())):
            r = future.result()
            results[r["name"]] = r
            console.finished(r)
            write_index(pipe, [results.get(s.name) or _pending(s) for s in pipe.steps])
            if track:
                _track(track, pipe, r, console)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    ordered = [results[s.name] for s in pipe.steps]
    write_index(pipe, ordered)
    return ordered


def _track(uri: str, pipe: Pipeline, result: dict, console: StepConsole) -> None:
    """Log a finished step to MLflow; a tracking failure is reported, never fatal to the pipeline."""
    if result["status"] == BLOCKED:  # never ran: no folder to log
        return
    try:
        from vmmlib.app.track import track_step

        run_id = track_step(uri, result["out_dir"], pipeline=pipe.name, step=result["name"])
        console.note(f"tracked {result['name']} in {uri} (MLflow run {run_id})")
    except Exception as e:
        console.note(f"could not track {result['name']} in {uri}: {type(e).__name__}: {e}")


def _pending(step: Step) -> dict:
    return {"name": step.name, "status": "pending", "duration_s": 0.0, "metrics": {}, "error": None}


def read_results(pipe: Pipeline) -> list[dict]:
    """Each step's last result as its folder's `status.json` holds it (pending where none), e.g. to
    write the index of a run again: `write_index(pipe, read_results(pipe))`."""
    results = []
    for step in pipe.steps:
        status = _read_status(Path(step.out_dir) / "status.json")
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
