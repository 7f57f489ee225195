"""`vmm compare RUN_A RUN_B [...]`: what differs between runs, read from their folders alone (no MLflow).

Give step folders (each holds `params.yaml`, `metrics.json`, `history.csv`), or whole pipeline run
folders: their steps are matched by name (`finetune-mix-fold0` of A with that of B). For each
matched step: the parameters that differ (paths inside a run folder are shown relative to it, so
`out_dir` is not a difference), every numeric metric with its change from the first run, and the
training curves of `history.csv` overlaid. Written as one HTML page (curves as embedded PNGs) and
printed as a plain-text table.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from vmmlib.app.track import flatten, is_step_dir, step_dirs
from vmmlib.runs import load_metrics, read_yaml

MAX_CURVES = 8  # history columns plotted per step: losses first, then evaluations, then the rest


@dataclass
class Run:
    label: str  # A, B, ...
    path: Path
    steps: dict[str, Path]  # step name → folder


@dataclass
class StepComparison:
    name: str
    params: list[tuple[str, list[Any]]]  # (parameter, value per run) where they differ
    metrics: list[tuple[str, list[float | None]]]  # (metric, value per run)
    histories: list[pd.DataFrame | None]


@dataclass
class Comparison:
    runs: list[Run]
    steps: list[StepComparison]  # the steps every run has, in the first run's order
    unmatched: dict[str, list[str]] = field(default_factory=dict)  # run label → its steps others lack
    html_path: Path | None = None

    def table(self) -> str:
        return text_table(self)


def _open(label: str, path: str | Path) -> Run:
    path = Path(path).resolve()
    if is_step_dir(path):
        return Run(label, path, {"": path})
    _, steps = step_dirs(path)
    return Run(label, path, {s.name: s for s in steps})


def _relative(value: Any, root: Path) -> Any:
    if isinstance(value, str) and str(root) in value:
        return value.replace(str(root), "<run>")
    if isinstance(value, list):
        return [_relative(v, root) for v in value]
    return value


def _params(step_dir: Path) -> dict[str, Any]:
    path = step_dir / "params.yaml"
    return flatten(read_yaml(path)) if path.is_file() else {}


def _all_same(values: list[Any]) -> bool:
    return len({json.dumps(v, default=str, sort_keys=True) for v in values}) == 1


def _metrics(step_dir: Path | None) -> dict[str, float]:
    if step_dir is None:
        return {}
    out = {}
    for k, v in flatten(load_metrics(step_dir)).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


def _history(step_dir: Path | None) -> pd.DataFrame | None:
    path = None if step_dir is None else step_dir / "history.csv"
    return pd.read_csv(path) if path is not None and path.is_file() else None


def _compare_step(name: str, runs: list[Run]) -> StepComparison:
    dirs = [r.steps[name] for r in runs]
    params = [_params(d) for d in dirs]
    differ = []
    for k in sorted(set().union(*params)):
        raw = [p.get(k, "(absent)") for p in params]
        shown = [_relative(v, r.path) for v, r in zip(raw, runs)]  # each run's own folder as <run>
        if not _all_same(raw) and not _all_same(shown):  # the same path, or each its own folder: same
            differ.append((k, shown))
    metrics = [_metrics(d) for d in dirs]
    names = list(dict.fromkeys(k for m in metrics for k in m))
    return StepComparison(
        name,
        differ,
        [(k, [m.get(k) for m in metrics]) for k in names],
        [_history(d) for d in dirs],
    )


def compare_runs(
    paths: list[str | Path], *, html: str | Path | None = None, write: bool = True
) -> Comparison:
    """Compare two or more step folders, or pipeline run folders step by step (matched by name).

    Args:
        html: where to write the page (default: `compare.html` in the first run's parent folder).
        write: write the HTML page (False: only compute the comparison).

    Raises:
        ValueError: fewer than two runs, a mix of step and pipeline folders, or no step in common.
    """
    if len(paths) < 2:
        raise ValueError("compare needs at least two run folders")
    runs = [_open(chr(ord("A") + i), p) for i, p in enumerate(paths)]
    single = ["" in r.steps for r in runs]
    if any(single) and not all(single):
        kinds = ", ".join(f"{r.label}={r.path} ({'step' if s else 'pipeline'})" for r, s in zip(runs, single))
        raise ValueError(
            f"compare step folders with step folders, pipeline folders with pipelines; got {kinds}"
        )
    names = list(dict.fromkeys(n for r in runs for n in r.steps))
    common = [n for n in names if all(n in r.steps for r in runs)]
    if not common:
        raise ValueError(
            "the runs have no step in common; steps: "
            + "; ".join(f"{r.label}: {', '.join(r.steps) or 'none'}" for r in runs)
        )
    unmatched = {r.label: [n for n in r.steps if n not in common] for r in runs}
    comparison = Comparison(
        runs, [_compare_step(n, runs) for n in common], {k: v for k, v in unmatched.items() if v}
    )
    if write:
        out = Path(html) if html else runs[0].path.parent / "compare.html"
        out.write_text(html_page(comparison), encoding="utf-8")
        comparison.html_path = out
    return comparison


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    return v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False)


def _delta(v: float | None, base: float | None) -> str:
    if v is None or base is None or math.isnan(v) or math.isnan(base):
        return ""
    d = v - base
    return f"{d:+.4g}" if d else "="


def _param_rows(step: StepComparison) -> list[list[str]]:
    return [[k, *(_fmt(v) for v in vals)] for k, vals in step.params]


def _grid(header: list[str], rows: list[list[str]], width: int = 40) -> list[str]:
    half = width // 2
    rows = [
        [c if len(c) <= width else c[: half - 1] + "…" + c[-half:] for c in row] for row in [header, *rows]
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def _title(step: StepComparison, comparison: Comparison) -> str:
    return step.name or " vs ".join(r.path.name for r in comparison.runs)


def _summary_rows(comparison: Comparison) -> list[list[str]]:
    """Each step's first metric (the task metric where the notebook writes it first) and its deltas."""
    rows = []
    for step in comparison.steps:
        if step.metrics:
            name, vals = step.metrics[0]
            cells = _metric_cells(StepComparison(step.name, [], [(name, vals)], []))[0]
            rows.append([_title(step, comparison), *cells])
    return rows


def text_table(comparison: Comparison) -> str:
    labels = [r.label for r in comparison.runs]
    lines = [f"{r.label}: {r.path}" for r in comparison.runs]
    lines += [f"only in {label}: {', '.join(names)}" for label, names in comparison.unmatched.items()]
    summary = _summary_rows(comparison)
    if len(summary) > 1:
        lines += [""] + _grid(["step", "metric", *labels], summary)
    for step in comparison.steps:
        lines += ["", f"== {_title(step, comparison)}"]
        params = _param_rows(step)
        lines += _grid(["parameter", *labels], params) if params else ["parameters: identical"]
        if step.metrics:
            lines += [""] + _grid(["metric", *labels], _metric_cells(step))
    return "\n".join(lines)


def _curve_columns(histories: list[pd.DataFrame | None]) -> list[str]:
    columns = list(dict.fromkeys(c for h in histories if h is not None for c in h.columns))
    columns = [c for c in columns if c not in ("step", "epoch", "train/skipped")]

    def rank(c: str) -> tuple[int, int]:
        order = 0 if c == "train/loss" else 1 if c.startswith("train/") else 2 if c.startswith("eval/") else 3
        return order, columns.index(c)

    return sorted(columns, key=rank)[:MAX_CURVES]


def curves_png(step: StepComparison, labels: list[str]) -> bytes | None:
    """The history columns of every run overlaid, one panel per column; None without histories."""
    columns = _curve_columns(step.histories)
    if not columns:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, len(columns))
    rows = math.ceil(len(columns) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), squeeze=False)
    for ax, column in zip(axes.flat, columns):
        for label, h in zip(labels, step.histories):
            if h is not None and column in h and "step" in h:
                data = h[["step", column]].dropna()
                ax.plot(data["step"], data[column], label=label, marker="." if len(data) < 30 else None)
        ax.set_title(column, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(columns) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _metric_cells(step: StepComparison) -> list[list[str]]:
    rows = []
    for k, vals in step.metrics:
        cells = [k, _fmt(vals[0])]
        for v in vals[1:]:
            d = _delta(v, vals[0])
            cells.append(f"{_fmt(v)} ({d})" if d else _fmt(v))
        rows.append(cells)
    return rows


def html_page(comparison: Comparison) -> str:
    labels = [r.label for r in comparison.runs]
    parts = [
        "<!doctype html><meta charset='utf-8'><title>vmm compare</title><style>"
        "body{font-family:sans-serif;margin:1.5em;max-width:1500px}table{border-collapse:collapse;margin:.4em 0}"
        "td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px;text-align:left}th{background:#f0f0f0}"
        "h2{margin-top:1.6em;border-bottom:1px solid #ddd}.note{color:#777}</style>",
        "<h1>Run comparison</h1>",
        _html_table(["run", "folder"], [[r.label, str(r.path)] for r in comparison.runs]),
    ]
    changed = [s for s in comparison.steps if s.params]
    parts.append(
        f"<p>{len(comparison.steps)} step(s); parameters differ in {len(changed)}: "
        f"{html.escape(', '.join(_title(s, comparison) for s in changed) or 'none')}. "
        "Deltas are each run minus run A.</p>"
    )
    for label, names in comparison.unmatched.items():
        parts.append(f"<p class='note'>only in {label}: {html.escape(', '.join(names))}</p>")
    summary = _summary_rows(comparison)
    if len(summary) > 1:
        parts.append("<h2>Summary</h2>" + _html_table(["step", "metric", *labels], summary))
    for step in comparison.steps:
        parts.append(f"<h2>{html.escape(_title(step, comparison))}</h2>")
        params = _param_rows(step)
        parts.append("<h3>Parameters that differ</h3>")
        parts.append(_html_table(["parameter", *labels], params) if params else "<p class='note'>none</p>")
        if step.metrics:
            parts.append("<h3>Metrics</h3>" + _html_table(["metric", *labels], _metric_cells(step)))
        png = curves_png(step, labels)
        if png:
            data = base64.b64encode(png).decode()
            parts.append(f"<h3>Training curves</h3><img alt='curves' src='data:image/png;base64,{data}'>")
    return "\n".join(parts)


__all__ = ["Comparison", "compare_runs", "curves_png", "html_page", "text_table"]
