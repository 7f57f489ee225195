"""Log run folders to MLflow: `vmm run PIPELINE --track URI` (or the pipeline key `track:`) and,
after the fact, `vmm track RUN_DIR --uri URI`.

Optional: `pip install 'vmmlib[track]'` (MLflow). Each step folder becomes one MLflow run, in the
experiment named after its pipeline (`vmmlib` for a folder outside one):

- params: `params.yaml` flattened (`optim.lr`; lists as JSON), values cut to MLflow's 6000 characters;
- metrics: `metrics.json` flattened (numbers only) as final values, and every `history.csv`
  column (`train/loss`, `eval/spearman`, `lr/head`, ...) as step metrics at its `step`;
- artifacts: the HTML report(s), `metrics.json` and `params.yaml`;
- tags: `vmm.pipeline`, `vmm.step`, `vmm.fold`, `vmm.fingerprint` (the step's `status.json`
  fingerprint, else `run.json`'s), `vmm.run_dir`, and the git commit of the code that logs
  (`mlflow.source.git.commit`; a folder logged after the fact gets today's commit).

Logging is idempotent: a folder already in the experiment with the same fingerprint (and status) is
not logged again (its MLflow run id is returned); a failed step is logged with status FAILED. With a `sqlite:///path/mlflow.db` store the artifacts go to
`path/mlartifacts/`. Browse with `mlflow ui --backend-store-uri sqlite:///path/mlflow.db`.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd

from vmmlib.runs import load_metrics, read_yaml

DEFAULT_EXPERIMENT = "vmmlib"
MAX_PARAM_CHARS = 6000
BATCH = 900  # MLflow's log_batch takes at most 1000 metrics and 100 params per call


def _mlflow():
    try:
        import mlflow
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ImportError(
            "tracking needs MLflow: pip install 'vmmlib[track]' (or pip install mlflow)"
        ) from None
    return mlflow, MlflowClient


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """`{"optim": {"lr": 1}}` → `{"optim.lr": 1}`; lists and other leaves stay as they are."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: value} if prefix else {}


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def git_commit(where: str | Path = ".") -> str:
    """The commit checked out at `where`, with `+dirty` when the work tree has changes; "" outside git."""
    try:
        run = lambda *a: subprocess.run(["git", *a], cwd=where, capture_output=True, text=True, timeout=10)  # noqa: E731
        head = run("rev-parse", "HEAD").stdout.strip()
        dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{head}+dirty" if head and dirty else head


def fingerprint_of(step_dir: Path) -> str:
    """The fingerprint a step folder records: `status.json` (pipeline step), else `run.json`, else a
    hash of its `params.yaml` and `metrics.json`."""
    for name in ("status.json", "run.json"):
        path = step_dir / name
        if path.is_file():
            fp = json.loads(path.read_text(encoding="utf-8")).get("fingerprint")
            if fp:
                return str(fp)
    h = hashlib.sha256()
    for name in ("params.yaml", "metrics.json"):
        if (step_dir / name).is_file():
            h.update((step_dir / name).read_bytes())
    return h.hexdigest()[:16]


def _status(step_dir: Path) -> str:
    path = step_dir / "status.json"
    return str(json.loads(path.read_text(encoding="utf-8")).get("status", "")) if path.is_file() else ""


def is_step_dir(path: Path) -> bool:
    return any((path / n).is_file() for n in ("params.yaml", "metrics.json", "status.json"))


def step_dirs(run_dir: str | Path) -> tuple[str, list[Path]]:
    """(pipeline name, step folders) of a pipeline run folder or of one step folder."""
    run_dir = Path(run_dir).resolve()
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir} is not a folder")
    index = run_dir / "index.json"
    if index.is_file():
        data = json.loads(index.read_text(encoding="utf-8"))
        names = [s["name"] for s in data.get("steps", [])]
        steps = [run_dir / n for n in names if (run_dir / n).is_dir() and is_step_dir(run_dir / n)]
        return data.get("pipeline") or run_dir.name, steps
    if is_step_dir(run_dir):
        parent = run_dir.parent / "index.json"
        pipeline = (
            json.loads(parent.read_text(encoding="utf-8")).get("pipeline") if parent.is_file() else None
        )
        return pipeline or DEFAULT_EXPERIMENT, [run_dir]
    steps = sorted(p for p in run_dir.iterdir() if p.is_dir() and is_step_dir(p))
    if not steps:
        raise ValueError(
            f"{run_dir} is neither a run folder (params.yaml, metrics.json or status.json) nor a folder of them"
        )
    return run_dir.name, steps


def _experiment(client, uri: str, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):  # artifacts beside the database, not in the caller's cwd
        location = (Path(uri[len("sqlite:///") :]).resolve().parent / "mlartifacts").as_uri()
    # The kind tells MLflow's UI to open on the runs table and charts (model training), not on traces.
    return client.create_experiment(
        name, artifact_location=location, tags={"mlflow.experimentKind": "custom_model_development"}
    )


def _already_logged(client, experiment_id: str, step_dir: Path, fp: str) -> str | None:
    """The finished MLflow run of this folder with this fingerprint (and status: a failed step that
    later succeeds is logged again), if any."""
    quoted = str(step_dir).replace("'", "\\'")
    query = f"tags.`vmm.fingerprint` = '{fp}' and tags.`vmm.run_dir` = '{quoted}'"
    if _status(step_dir):
        query += f" and tags.`vmm.status` = '{_status(step_dir)}'"
    runs = client.search_runs([experiment_id], query, max_results=1)
    return runs[0].info.run_id if runs else None


def _history_metrics(step_dir: Path, now_ms: int) -> list:
    from mlflow.entities import Metric

    path = step_dir / "history.csv"
    if not path.is_file():
        return []
    frame = pd.read_csv(path)
    if "step" not in frame:
        return []
    out = []
    for column in frame.columns:
        if column in ("step", "epoch") or not pd.api.types.is_numeric_dtype(frame[column]):
            continue
        for step, value in zip(frame["step"], frame[column]):
            if _number(value) is not None:
                out.append(Metric(column, float(value), now_ms, int(step)))
    return out


def _params(step_dir: Path) -> dict[str, str]:
    path = step_dir / "params.yaml"
    raw = flatten(read_yaml(path)) if path.is_file() else {}
    text = {
        k: v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False) for k, v in raw.items()
    }
    return {k: v[:MAX_PARAM_CHARS] for k, v in text.items()}


def _tags(step_dir: Path, pipeline: str, step: str, fp: str, commit: str) -> dict[str, str]:
    state = _status(step_dir)
    params = read_yaml(step_dir / "params.yaml") if (step_dir / "params.yaml").is_file() else {}
    tags = {"vmm.pipeline": pipeline, "vmm.step": step, "vmm.fingerprint": fp, "vmm.run_dir": str(step_dir),
            "vmm.status": state, "mlflow.source.git.commit": commit, "vmm.commit": commit}  # fmt: skip
    if isinstance(params.get("fold"), int):
        tags["vmm.fold"] = str(params["fold"])
    if params.get("task"):
        tags["vmm.task"] = str(params["task"])
    return {k: v for k, v in tags.items() if v}


def _run_times(step_dir: Path) -> tuple[int | None, int | None]:
    """(start, end) in ms of a pipeline step: `status.json` was written at its end with `duration_s`."""
    status = step_dir / "status.json"
    if not status.is_file():
        return None, None
    duration = json.loads(status.read_text(encoding="utf-8")).get("duration_s")
    end_ms = int(status.stat().st_mtime * 1000)
    return (end_ms - int(float(duration) * 1000) if isinstance(duration, (int, float)) else None), end_ms


def track_step(
    uri: str,
    step_dir: str | Path,
    *,
    pipeline: str | None = None,
    step: str | None = None,
    commit: str | None = None,
) -> str:
    """Log one step folder as one MLflow run (see the module docstring); returns the MLflow run id.

    A folder already logged in that experiment with the same fingerprint is not logged again.
    """
    _, MlflowClient = _mlflow()
    from mlflow.entities import RunTag

    step_dir = Path(step_dir).resolve()
    if pipeline is None:
        pipeline = step_dirs(step_dir)[0]
    step = step or step_dir.name
    client = MlflowClient(tracking_uri=uri)
    experiment_id = _experiment(client, uri, pipeline)
    fp = fingerprint_of(step_dir)
    done = _already_logged(client, experiment_id, step_dir, fp)
    if done:
        return done
    commit = git_commit() if commit is None else commit
    start_ms, end_ms = _run_times(step_dir)
    run = client.create_run(experiment_id, run_name=step, start_time=start_ms)
    run_id = run.info.run_id
    try:
        _log(client, run_id, step_dir, int(run.info.start_time))
    except BaseException:  # no half-logged run for the next call to take as done
        client.delete_run(run_id)
        raise
    tags = [RunTag(k, v) for k, v in _tags(step_dir, pipeline, step, fp, commit).items()]
    client.log_batch(run_id, tags=tags)  # last: the fingerprint marks the run as complete
    failed = _status(step_dir) == "failed"
    client.set_terminated(run_id, status="FAILED" if failed else "FINISHED", end_time=end_ms)
    return run_id


def _log(client, run_id: str, step_dir: Path, now_ms: int) -> None:
    """Params, metrics (final and history) and artifacts of a step folder into an MLflow run."""
    from mlflow.entities import Metric, Param

    params = [Param(k, v) for k, v in _params(step_dir).items()]
    finals = {k: _number(v) for k, v in flatten(load_metrics(step_dir)).items()}
    history = _history_metrics(step_dir, now_ms)
    last_step = max((m.step for m in history), default=0)
    metrics = history + [Metric(k, v, now_ms, last_step) for k, v in finals.items() if v is not None]
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i : i + 100])
    for i in range(0, len(metrics), BATCH):
        client.log_batch(run_id, metrics=metrics[i : i + BATCH])
    for name in sorted(p.name for p in step_dir.glob("*.html")) + ["metrics.json", "params.yaml"]:
        if (step_dir / name).is_file():
            client.log_artifact(run_id, str(step_dir / name))


def track_dir(uri: str, run_dir: str | Path) -> list[tuple[str, str]]:
    """Log a pipeline run folder (every step) or one step folder; returns (step, MLflow run id) pairs."""
    pipeline, steps = step_dirs(run_dir)
    commit = git_commit()
    return [(s.name, track_step(uri, s, pipeline=pipeline, commit=commit)) for s in steps]


__all__ = ["flatten", "git_commit", "step_dirs", "track_dir", "track_step"]
