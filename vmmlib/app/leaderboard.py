"""The run index (`index.html`, `index.json`): a leaderboard of the models first, then every step.

The leaderboard is built from the steps' `metrics.json` through the task contract and the
pipeline's DAG, never by guessing from step or key names:

- the metric is `get_task(task).METRIC` (higher is better), `task` being each step's parameter;
- a *model* is a step that scores the out-of-fold predictions of the fine-tuning steps it runs
  after (30_inference); its fold scores are those steps' own scores (20_finetune), indexed by their
  `fold` parameter;
- an *ensemble* is a step that scores a weighted combination of the models it runs after
  (40_ensemble), with each model's weight;
- fine-tuned folds that no model step has scored yet (a pipeline still running, or one without
  inference) get a row of their own, so a partial run already shows its folds.

`read_step_scores` is the one place that knows which keys the notebooks write.
"""

from __future__ import annotations

import html
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vmmlib.app.report import WARNINGS, report_warnings
from vmmlib.runs import in_run_dir

if TYPE_CHECKING:
    from vmmlib.app.pipeline_file import Pipeline, Step

CHART = "leaderboard.png"  # the bar chart, written beside index.html


@dataclass
class StepScores:
    """What one step's metrics say about the task metric; None: the step does not report it."""

    score: float | None = None  # 20_finetune: best validation score of its fold
    oof: float | None = None  # 30_inference: out-of-fold score of the model (its folds' models)
    oof_parts: dict[str, float] = field(default_factory=dict)  # 30_inference: e.g. yt8m per TTA shift
    fold_mean: float | None = None  # 30_inference: mean of the fold scores it read
    ensemble: float | None = None  # 40_ensemble: out-of-fold score of the weighted ensemble
    weights: dict[str, float] = field(default_factory=dict)  # 40_ensemble: member folder → weight
    test: float | None = None  # 40_ensemble: score of the submission against `truth_path`


def read_step_scores(metrics: Mapping[str, Any], metric: str, members: Sequence[str] = ()) -> StepScores:
    """Read a step's `metrics.json` as the notebooks write it (20_finetune, 30_inference, 40_ensemble).

    Args:
        metrics: the step's metrics; a null value (a non-finite score) reads as NaN.
        metric: the task's `METRIC`.
        members: run-folder names of the models an ensemble step combines (for their weights).
    """

    def num(key: str) -> float | None:
        value = metrics.get(key)
        if key not in metrics or isinstance(value, bool):
            return None
        return float(value) if isinstance(value, (int, float)) else math.nan

    ensemble = num(f"{metric}_oof_ensemble")
    if ensemble is not None:
        weights = {m: num(f"weight_{m}") for m in members}
        return StepScores(
            ensemble=ensemble,
            weights={m: w for m, w in weights.items() if w is not None},
            test=num(f"test_{metric}"),
        )
    prefix = f"{metric}_oof_"
    return StepScores(
        score=num(metric),
        oof=num(f"{metric}_oof"),
        oof_parts={k[len(prefix) :]: num(k) for k in metrics if k.startswith(prefix)},
        fold_mean=num(f"{metric}_fold_mean"),
    )


@dataclass
class Row:
    """One line of the leaderboard: a model, an ensemble, or fine-tuned folds not yet inferred."""

    name: str  # the step (model, ensemble) or declared fold step (folds)
    kind: str  # model | ensemble | folds
    architecture: str = ""  # the fine-tuning steps' `model` parameter(s)
    folds: dict[int, float] = field(default_factory=dict)  # fold index → fold score
    fold_mean: float | None = None
    fold_sd: float | None = None  # sample standard deviation over the folds (ddof=1)
    oof: float | None = None  # out-of-fold score (an ensemble: of the ensemble)
    oof_parts: dict[str, float] = field(default_factory=dict)
    test: float | None = None
    members: dict[str, float] = field(default_factory=dict)  # ensemble: member step → weight
    report: str = ""  # the HTML report of the step the row reads its headline from


@dataclass
class Leaderboard:
    task: str
    metric: str
    rows: list[Row]  # best out-of-fold score first; rows without one last


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _fold_row(name: str, kind: str, fold_steps: list[Step], scores: dict[str, StepScores]) -> Row:
    folds = {int(s.params.get("fold", i)): scores[s.name].score for i, s in enumerate(fold_steps)}
    mean, sd = _mean_sd([v for v in folds.values() if not math.isnan(v)])
    models = sorted({str(s.params["model"]) for s in fold_steps if s.params.get("model")})
    return Row(name, kind, ", ".join(models), dict(sorted(folds.items())), mean, sd)


def _board(task: str, metric: str, steps: list[Step], results: dict[str, dict]) -> Leaderboard:
    by_name = {s.name: s for s in steps}
    folder = {s.name: Path(s.out_dir).name for s in steps}
    scores = {s.name: read_step_scores(results.get(s.name, {}).get("metrics") or {}, metric) for s in steps}
    is_fold = {n for n, s in by_name.items() if s.group != n and scores[n].score is not None}
    models: dict[str, Row] = {}
    for s in steps:
        sc = scores[s.name]
        ups = [by_name[d] for d in s.after if d in is_fold]
        if sc.ensemble is None and (sc.oof is not None or ups):
            row = _fold_row(s.name, "model", ups, scores)
            if not ups and sc.fold_mean is not None:  # folds outside the DAG: the step's own mean
                row.fold_mean = sc.fold_mean
            row.oof, row.oof_parts = sc.oof, sc.oof_parts
            models[s.name] = row
    scored = {d for n in models for d in by_name[n].after}
    rows = list(models.values())
    for group in dict.fromkeys(by_name[n].group for n in by_name if n in is_fold and n not in scored):
        rows.append(
            _fold_row(group, "folds", [by_name[n] for n in is_fold if by_name[n].group == group], scores)
        )
    for s in steps:
        members = [d for d in s.after if d in models]
        metrics = results.get(s.name, {}).get("metrics") or {}
        sc = read_step_scores(metrics, metric, [folder[m] for m in members])
        if sc.ensemble is not None:
            weights = {m: sc.weights[folder[m]] for m in members if folder[m] in sc.weights}
            rows.append(Row(s.name, "ensemble", oof=sc.ensemble, test=sc.test, members=weights))
    for row in rows:
        row.report = (results.get(row.name) or {}).get("html") or ""
    rows.sort(key=lambda r: -r.oof if r.oof is not None and not math.isnan(r.oof) else math.inf)
    return Leaderboard(task, metric, rows)


def build_leaderboards(pipe: Pipeline, results: list[dict]) -> list[Leaderboard]:
    """One leaderboard per task of the pipeline's steps (a pipeline has one task, as a rule).

    Args:
        pipe: the loaded pipeline (its steps' parameters and `after` edges are the DAG).
        results: one result dict per step, as `run_step` returns them (`name`, `metrics`, `html`).

    Returns:
        Leaderboards with at least one row; none when no step reports its task's metric.
    """
    from vmmlib.tasks import get_task, list_tasks

    by_result = {r["name"]: r for r in results}
    boards = []
    tasks = dict.fromkeys(s.params.get("task") for s in pipe.steps)
    for task in [t for t in tasks if t in list_tasks()]:
        steps = [s for s in pipe.steps if s.params.get("task") == task]
        board = _board(task, get_task(task).METRIC, steps, by_result)
        if board.rows:
            boards.append(board)
    return boards


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "non-finite" if math.isnan(value) else f"{value:.4f}"
    return html.escape(str(value))


def leaderboard_html(board: Leaderboard, run_dir: Path, chart: str | None = None) -> str:
    """The leaderboard section of the index: a one-line answer, the table, the chart."""
    n_folds = max((k + 1 for r in board.rows for k in r.folds), default=0)
    has_test = any(r.test is not None for r in board.rows)
    has_ens = any(r.kind == "ensemble" for r in board.rows)
    head = ["#", "model", *[f"fold {k}" for k in range(n_folds)], "fold mean ± sd", "out of fold"]
    head += ["test"] * has_test + ["ensemble of (weight)"] * has_ens
    lines = []
    for rank, r in enumerate(board.rows, 1):
        name = html.escape(r.name)
        if r.report and Path(r.report).exists():
            name = f'<a href="{html.escape(os.path.relpath(r.report, run_dir))}">{name}</a>'
        if r.architecture:
            name += f'<br><span class="arch">{html.escape(r.architecture)}</span>'
        if r.kind == "folds":
            name += '<br><span class="arch">folds only: no out-of-fold score yet</span>'
        spread = "" if r.fold_sd is None else f" ± {r.fold_sd:.4f}"
        oof = f"<b>{_fmt(r.oof)}</b>"
        if r.oof_parts:
            oof += '<br><span class="arch">' + "<br>".join(
                f"{html.escape(k)}: {_fmt(v)}" for k, v in r.oof_parts.items()
            ) + "</span>"  # fmt: skip
        cells = [str(rank), name, *[_fmt(r.folds.get(k)) for k in range(n_folds)]]
        cells += [_fmt(r.fold_mean) + spread if r.fold_mean is not None else "–", oof]
        cells += [_fmt(r.test)] * has_test
        cells += ["<br>".join(f"{html.escape(m)} × {w:.2f}" for m, w in r.members.items())] * has_ens
        tds = "".join(f"<td>{c}</td>" for c in cells)
        lines.append(f'<tr class="{r.kind}">{tds}</tr>')
    ths = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    img = (
        f'<p><img src="{html.escape(chart)}" alt="{html.escape(board.metric)} per model"></p>'
        if chart
        else ""
    )
    return (
        f"<h2>Leaderboard: {html.escape(board.metric)} ({html.escape(board.task)})</h2>"
        f'<p class="answer">{_answer(board)}</p>'
        f'<table class="board"><tr>{ths}</tr>{"".join(lines)}</table>{_notes(board)}{img}'
    )


def _notes(board: Leaderboard) -> str:
    """Why a row's out-of-fold score and fold mean measure different things (online learning)."""
    notes = []
    for r in board.rows:
        offline = r.oof_parts.get("offline")
        if offline is None:
            continue
        notes.append(
            f"<b>{html.escape(r.name)}</b> learns online at prediction time, as MUGE seed 002 does: the "
            "model keeps training on the unlabelled cache of the split it predicts. Its out-of-fold score "
            f"{_fmt(r.oof)} is after that; the fold mean {_fmt(r.fold_mean)} is each fold's validation score "
            "of the fine-tuned model without it; the same predictions without online learning score "
            f"{_fmt(offline)} out of fold (<i>offline</i>)."
        )
    return "".join(f'<p class="note">{n}</p>' for n in notes)


def _answer(board: Leaderboard) -> str:
    """One sentence: the best row by out-of-fold score, and the best single model beside it."""
    scored = [r for r in board.rows if r.oof is not None and not math.isnan(r.oof)]
    if not scored:
        return f"No out-of-fold {html.escape(board.metric)} yet."
    best = scored[0]
    text = f"Best out-of-fold {html.escape(board.metric)}: <b>{_fmt(best.oof)}</b> by <b>{html.escape(best.name)}</b>"
    if best.test is not None:
        text += f" (test {_fmt(best.test)})"
    single = [r for r in scored if r.kind == "model"]
    if best.kind == "ensemble" and single:
        gain = best.oof - single[0].oof
        text += (
            f", {gain:+.4f} over the best single model {html.escape(single[0].name)} ({_fmt(single[0].oof)})"
        )
    ensembles = [r for r in scored if r.kind == "ensemble"]
    if best.kind == "model" and ensembles:  # an ensemble that does not help is news too
        ens = ensembles[0]
        text += f"; the ensemble {html.escape(ens.name)} scores {_fmt(ens.oof)} ({ens.oof - best.oof:+.4f})"
    return text + "."


def _steps_html(pipe: Pipeline, results: list[dict]) -> str:
    rows = []
    for r in results:
        rel = lambda p: os.path.relpath(p, pipe.run_dir) if p else ""  # noqa: E731
        links = " ".join(
            f'<a href="{html.escape(rel(r[k]))}">{k}</a>'
            for k in ("html", "notebook")
            if r.get(k) and Path(r[k]).exists()
        )
        metrics = "<br>".join(
            f"{html.escape(str(k))} = {_fmt(v)}" for k, v in (r.get("metrics") or {}).items() if k != WARNINGS
        )
        warned = "".join(
            f'<p class="warn">⚠ {html.escape(w)}</p>' for w in report_warnings(r.get("metrics") or {})
        )
        error = f'<pre class="err">{html.escape(r["error"])}</pre>' if r.get("error") else ""
        rows.append(
            f'<tr class="{r["status"]}"><td>{html.escape(r["name"])}</td><td>{r["status"]}</td>'
            f"<td>{r.get('duration_s', 0):.1f} s</td><td>{warned}{metrics}</td><td>{links}{error}</td></tr>"
        )
    return (
        "<h2>Steps</h2><table><tr><th>step</th><th>status</th><th>duration</th><th>metrics</th>"
        f"<th>report</th></tr>{''.join(rows)}</table>"
    )


STYLE = """body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1em}
td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}th{background:#f4f4f4}
table.board td{text-align:right;white-space:nowrap}table.board td:nth-child(2),table.board td:last-child{text-align:left}
tr.ensemble{background:#fff3e0}tr.folds{color:#666}.arch{color:#666;font-size:85%}p.answer{font-size:115%}
tr.ok td:nth-child(2),tr.cached td:nth-child(2){color:green}tr.failed td:nth-child(2),tr.blocked td:nth-child(2){color:#b00}
pre.err{color:#b00;white-space:pre-wrap}p.warn{color:#b00;font-weight:bold;margin:0 0 .3em}ul.warn{color:#b00;font-size:110%}p.note{color:#444;max-width:70em}"""


def _leaderboard_section(pipe: Pipeline, results: list[dict]) -> tuple[list[dict], str]:
    """The leaderboards as JSON and HTML (chart files written beside the index); never raises."""
    try:
        boards = build_leaderboards(pipe, results)
        parts = []
        for i, board in enumerate(boards):
            chart = CHART if i == 0 else f"leaderboard-{board.task}.png"
            _write_chart(board, in_run_dir(pipe.run_dir, chart, what="chart"))
            parts.append(leaderboard_html(board, pipe.run_dir, chart))
        return [_finite(asdict(b)) for b in boards], "".join(parts)
    except Exception as e:  # the index must be written whatever a half-finished run holds
        return (
            [],
            f'<pre class="err">leaderboard unavailable: {html.escape(f"{type(e).__name__}: {e}")}</pre>',
        )


def _write_chart(board: Leaderboard, path: Path) -> None:
    # A figure outside pyplot: no GUI backend, nothing left open in a notebook that runs a pipeline.
    from matplotlib.figure import Figure

    from vmmlib.plots import plot_leaderboard

    fig = Figure(figsize=(max(6.0, 1.6 * len(board.rows) + 3.0), 3.8))
    plot_leaderboard([asdict(r) for r in board.rows], metric=board.metric, ax=fig.subplots())
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _finite(value: Any) -> Any:
    """NaN → None, recursively: index.json stays valid JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _warnings_html(results: list[dict]) -> str:
    """Every step's warnings (e.g. "fine-tuning did not improve"), above the leaderboard."""
    items = [
        f"<li><b>{html.escape(r['name'])}</b>: {html.escape(w)}</li>"
        for r in results
        for w in report_warnings(r.get("metrics") or {})
    ]
    return f'<ul class="warn">{"".join(items)}</ul>' if items else ""


def write_index(pipe: Pipeline, results: list[dict]) -> Path:
    """Write `index.json` and `index.html`: the leaderboard(s) first, then every step with its
    status, duration, metrics and report (`leaderboard.png` beside them when there is a board)."""
    pipe.run_dir.mkdir(parents=True, exist_ok=True)
    boards, board_html = _leaderboard_section(pipe, results)
    in_run_dir(pipe.run_dir, "index.json", what="index").write_text(
        json.dumps({"pipeline": pipe.name, "leaderboards": boards, "steps": results}, indent=2, default=str)
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(pipe.name)}</title>
<style>{STYLE}</style></head><body><h1>Pipeline {html.escape(pipe.name)}</h1><p>{time.strftime("%Y-%m-%d %H:%M:%S")}</p>
{_warnings_html(results)}{board_html}{_steps_html(pipe, results)}</body></html>"""
    path = in_run_dir(pipe.run_dir, "index.html", what="index")
    path.write_text(page, encoding="utf-8")
    return path
