"""The report of one notebook execution: what a run warns about, its metrics as a table, and the HTML
report that opens with the answer.

A notebook's asserts catch a *broken* run (a non-finite loss, a missing file, an invalid submission).
A run that works but disappoints — fine-tuning that does not beat the untrained model, an ensemble
below its best member — is a result to report, not an exception that blocks every later pipeline
step: `improvement_warnings` and `ensemble_warnings` word it, the notebook saves the sentences under
`warnings` in `metrics.json`, `export_report` puts them at the top of the step's HTML report and the
pipeline index shows them beside the step. The tests assert the improvement on the sample recipes.

`export_report` renders the executed notebook unchanged (the `.ipynb` stays the real record) with a
summary block first (task, model, data, the headline metric against its baseline, warnings, run
folder, every parameter), code cells folded and the parameters cells left out (the block lists them).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

WARNINGS = "warnings"  # the metrics.json key: a list of sentences, empty when all is well
ENSEMBLE_TOLERANCE = 0.02  # an ensemble this far below its best model is "clearly worse"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def improvement_warnings(what: str, metric: str, after: float, before: float) -> list[str]:
    """`["<what> did not improve <metric>: … "]` unless `after` > `before` (both finite).

    Args:
        what: the training that should have helped, e.g. "fine-tuning".
        metric: the metric's name (higher is better).
        after: the score of the trained model (a non-finite score is a warning too).
        before: the score of the model before training.
    """
    if _finite(after) and _finite(before) and after > before:
        return []
    return [f"{what} did not improve {metric}: {after:.4f} after, {before:.4f} before"]


def ensemble_warnings(
    metric: str, ensemble: float, singles: Mapping[str, float], tolerance: float = ENSEMBLE_TOLERANCE
) -> list[str]:
    """A warning when the ensemble scores more than `tolerance` below its best single model."""
    scored = {k: v for k, v in singles.items() if _finite(v)}
    if not scored:
        return []
    best = max(scored, key=scored.get)
    if _finite(ensemble) and ensemble >= scored[best] - tolerance:
        return []
    return [
        f"the ensemble is clearly worse than its best model: {metric} {ensemble:.4f} against "
        f"{scored[best]:.4f} by {best} (tolerance {tolerance})"
    ]


def metrics_table(metrics: Mapping[str, Any]):
    """The metrics as a two-column DataFrame (`metric`, `value`) for the notebook's last output;
    warnings come first, one row each."""
    import pandas as pd

    rows = [("warning", w) for w in metrics.get(WARNINGS) or []]
    rows += [(k, _cell(v)) for k, v in metrics.items() if k != WARNINGS]
    return pd.DataFrame(rows, columns=["metric", "value"], dtype=object).set_index("metric")


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, (list, dict)):
        return str(value)
    return value


# --- the headline: which metric a report leads with ------------------------------------------------


def headline(metrics: Mapping[str, Any], metric: str, pretrain_metric: str = "") -> list[tuple[str, Any]]:
    """(label, value) pairs a report leads with: the step's headline score, then its baseline.

    Keys as the notebooks write them: 40_ensemble `<metric>_oof_ensemble` (baseline: its best single
    model), 30_inference `<metric>_oof` (baseline: the fold mean), 20_finetune `<metric>` (baseline:
    `<metric>_before`), 10_pretrain `<pretrain_metric>` (`_untrained`), 00_explore `items`.
    """
    ens = metrics.get(f"{metric}_oof_ensemble")
    if ens is not None:
        prefix = f"{metric}_oof_"
        singles = {k[len(prefix) :]: v for k, v in metrics.items() if k.startswith(prefix)}
        singles.pop("ensemble", None)
        pairs = [(f"out-of-fold {metric}, ensemble", ens)]
        finite = {k: v for k, v in singles.items() if _finite(v)}
        if finite:
            best = max(finite, key=finite.get)
            pairs.append((f"best single model ({best})", finite[best]))
        tests = [(f"test {k[5:]}", v) for k, v in metrics.items() if k.startswith("test_")]
        return pairs + tests[:3]
    if f"{metric}_oof" in metrics:
        pairs = [(f"out-of-fold {metric}", metrics[f"{metric}_oof"])]
        if f"{metric}_fold_mean" in metrics:
            pairs.append(("mean of the fold scores", metrics[f"{metric}_fold_mean"]))
        return pairs
    if metric in metrics:
        return [
            (f"{metric} (best validation)", metrics[metric]),
            ("before fine-tuning", metrics.get(f"{metric}_before")),
        ]
    if pretrain_metric and pretrain_metric in metrics:
        return [
            (f"{pretrain_metric} (best)", metrics[pretrain_metric]),
            ("untrained", metrics.get(f"{pretrain_metric}_untrained")),
        ]
    return [(k, metrics[k]) for k in ("items", "labels_seen") if k in metrics]


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else "non-finite"
    return html.escape(str(value))


def _task_metrics(task: str) -> tuple[str, str]:
    try:
        from vmmlib.tasks import get_task

        t = get_task(task)
        return t.METRIC, t.PRETRAIN_METRIC
    except Exception:  # an unknown task must not stop a report
        return "", ""


def _models(params: Mapping[str, Any]) -> str:
    """The model a step trains, or the step folders whose models it uses (30_inference, 40_ensemble)."""
    if params.get("model"):
        return str(params["model"])
    dirs = params.get("finetune_dirs") or params.get("inference_dirs") or []
    return ", ".join(Path(str(d)).name for d in dirs)


def summary_html(run_dir: str | Path, title: str = "") -> str:
    """The block a report opens with, from the run folder's `params.yaml` and `metrics.json`."""
    from vmmlib.runs import load_metrics, read_yaml

    run_dir = Path(run_dir)
    params = read_yaml(run_dir / "params.yaml") if (run_dir / "params.yaml").is_file() else {}
    metrics = load_metrics(run_dir)
    metric, pretrain_metric = _task_metrics(str(params.get("task", "")))
    models = ("model" if params.get("model") else "models", _models(params))  # 30/40: the steps they read
    rows = [("task", params.get("task")), models, ("data", params.get("data_dir"))]
    rows += headline(metrics, metric, pretrain_metric) if metrics else [("metrics", "none written")]
    rows.append(("run folder", str(run_dir)))
    lines = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>"
        for k, v in rows
        if v not in ("", None) or k not in ("model", "models", "data")  # a headline without a value shows "–"
    )
    warnings = "".join(f"<li>{html.escape(str(w))}</li>" for w in metrics.get(WARNINGS) or [])
    dry = (
        '<p class="vmm-dry">DRY RUN: capped steps and items; not a result.</p>'
        if params.get("dry_run")
        else ""
    )
    params_rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>" for k, v in params.items()
    )
    metric_rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>"
        for k, v in metrics.items()
        if k != WARNINGS
    )
    return (
        f'<section class="vmm-summary"><h1>{html.escape(title or run_dir.name)}</h1>{dry}'
        + (f'<ul class="vmm-warnings">{warnings}</ul>' if warnings else "")
        + f'<table class="vmm-table">{lines}</table>'
        + f'<details><summary>all metrics</summary><table class="vmm-table">{metric_rows}</table></details>'
        + f'<details><summary>all parameters</summary><table class="vmm-table">{params_rows}</table></details>'
        + "</section>"
    )


REPORT_CSS = """<style>
.vmm-summary{font-family:sans-serif;margin:1em 0 2em;padding:1em 1.5em;border:1px solid #ccc;border-radius:6px;background:#fafafa}
.vmm-summary h1{margin-top:0;font-size:160%}.vmm-table{border-collapse:collapse;margin:.5em 0}
.vmm-table th,.vmm-table td{border:1px solid #ddd;padding:3px 10px;text-align:left;font-weight:normal}
.vmm-table th{background:#f0f0f0;color:#444}.vmm-summary td{font-weight:bold}
.vmm-warnings{color:#b00;font-weight:bold;font-size:110%}.vmm-dry{background:#fd5;padding:.4em;font-weight:bold}
details.vmm-code>summary{color:#888;font-size:80%;cursor:pointer;font-family:monospace}
</style>"""

TEMPLATE = """{%- extends 'lab/index.html.j2' -%}
{%- block html_head -%}{{ super() }}{{ resources.vmm_css }}{%- endblock html_head -%}
{%- block body_header -%}{{ super() }}{{ resources.vmm_summary }}{%- endblock body_header -%}
{% block input_group -%}
<details class="vmm-code"><summary>code</summary>
{{ super() }}
</details>
{%- endblock input_group %}
"""


def export_report(notebook: str | Path, html_path: str | Path, run_dir: str | Path | None = None) -> Path:
    """Write the HTML report of an executed notebook: the summary block of `run_dir` (default: the
    notebook's folder) first, code cells folded, the parameters cells left out (the summary's
    "all parameters" lists every value); the notebook file itself is not changed."""
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    notebook = Path(notebook)
    run_dir = Path(run_dir) if run_dir else notebook.parent
    nb = nbformat.read(str(notebook), as_version=4)
    remove = TagRemovePreprocessor(remove_cell_tags={"parameters", "injected-parameters"}, enabled=True)
    nb, _ = remove.preprocess(nb, {})
    exporter = HTMLExporter(
        template_name="lab",
        extra_loaders=[jinja2.DictLoader({"vmm_report.html.j2": TEMPLATE})],
        template_file="vmm_report.html.j2",
    )
    title = f"{run_dir.name} · {_title(nb, notebook)}"
    resources = {"vmm_summary": summary_html(run_dir, title=title), "vmm_css": REPORT_CSS}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    Path(html_path).write_text(body, encoding="utf-8")
    return Path(html_path)


def _title(nb, notebook: Path) -> str:
    """The notebook's own title (its first markdown heading), else its file name."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return notebook.stem


def report_warnings(metrics: Mapping[str, Any]) -> Sequence[str]:
    """The warnings a step's metrics carry (none for a metrics file written before warnings existed)."""
    value = metrics.get(WARNINGS) or []
    return [str(w) for w in value] if isinstance(value, list) else [str(value)]
