"""The run index leads with a leaderboard built from the steps' metrics, the task contract and the DAG.

The run folder here is written by hand, file by file as `run_step` leaves it (params.yaml,
metrics.json, status.json, the report), so no notebook runs.
"""

import json
import statistics
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_notebook

from vmmlib.app.leaderboard import read_step_scores
from vmmlib.app.pipeline import load_pipeline, read_results, write_index
from vmmlib.runs import save_metrics, write_yaml
from vmmlib.tasks import get_task

FOLDS = {"finetune-a": [0.70, 0.74, 0.72], "finetune-b": [0.80, 0.86, 0.83]}


def _notebook(path: Path) -> Path:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = new_code_cell(
        'task: str = "qqbrowser"\nmodel: str = ""\nfold: int = 0\nn_folds: int = 0\n'
        'finetune_dirs: list = []\ninference_dirs: list = []\nout_dir: str = "x"'
    )
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    nbformat.write(nb, path)
    return path


def _pipeline(tmp_path: Path, task: str, *, until: str = "ensemble") -> Path:
    """pretrain → finetune-a (3 folds) → inference-a; finetune-b (3 folds) → inference-b; both → ensemble."""
    nb = str(_notebook(tmp_path / "step.ipynb"))
    run = "{run_dir}"
    steps = [
        {"name": "pretrain", "notebook": nb, "set": {"task": task, "model": "net_a"}},
        {"name": "finetune-a", "notebook": nb, "set": {"task": task, "model": "net_a"}, "after": ["pretrain"], "folds": 3},
        {"name": "finetune-b", "notebook": nb, "set": {"task": task, "model": "net_b"}, "folds": 3},
        {"name": "inference-a", "notebook": nb, "after": ["finetune-a"],
         "set": {"task": task, "finetune_dirs": [f"{run}/finetune-a-fold*"]}},
        {"name": "inference-b", "notebook": nb, "after": ["finetune-b"],
         "set": {"task": task, "finetune_dirs": [f"{run}/finetune-b-fold*"]}},
        {"name": "ensemble", "notebook": nb, "after": ["inference-a", "inference-b"],
         "set": {"task": task, "inference_dirs": [f"{run}/inference-a", f"{run}/inference-b"]}},
    ]  # fmt: skip
    steps = steps[: [s["name"] for s in steps].index(until) + 1]
    path = tmp_path / "pipe.yaml"
    path.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"), "steps": steps}, sort_keys=False))
    return path


def _metrics_as_the_notebooks_write_them(metric: str) -> dict[str, dict]:
    out = {"pretrain": {metric: 0.99, f"{metric}_untrained": 0.1, "best_step": 100}}  # not a model
    for group, scores in FOLDS.items():
        for k, score in enumerate(scores):
            out[f"{group}-fold{k}"] = {metric: score, f"{metric}_before": 0.5, "best_step": 75, "fold": k}
    out["inference-a"] = {f"{metric}_oof": 0.725, f"{metric}_fold_mean": 0.72, "folds": 3}
    out["inference-b"] = {
        f"{metric}_oof": 0.831,
        f"{metric}_oof_-1": 0.82,  # a per-part score (yt8m: per TTA shift)
        f"{metric}_oof_0": 0.83,
        f"{metric}_fold_mean": 0.83,
        "folds": 3,
    }
    out["ensemble"] = {
        f"{metric}_oof_ensemble": 0.845,
        f"{metric}_oof_inference-a": 0.725,
        f"{metric}_oof_inference-b": 0.831,
        "weight_inference-a": 0.3,
        "weight_inference-b": 0.7,
        "option_rank_decay": 3.7,
        f"test_{metric}": 0.812,
    }
    return out


def _write_run(pipe, metrics: dict[str, dict], done) -> None:
    """The files `run_step` leaves in each finished step's folder."""
    for step in pipe.steps:
        if step.name not in done:
            continue
        out = Path(step.out_dir)
        write_yaml(out / "params.yaml", step.params)
        save_metrics(out, metrics[step.name])
        (out / "step.html").write_text("<html>report</html>")
        status = {
            "name": step.name, "out_dir": str(out), "notebook": str(out / "step.ipynb"), "html": str(out / "step.html"),
            "duration_s": 1.5, "metrics": json.loads((out / "metrics.json").read_text()), "error": None,
            "fingerprint": "0123456789abcdef", "status": "ok",
        }  # fmt: skip
        (out / "status.json").write_text(json.dumps(status, indent=2))


def _strict_json(path: Path) -> dict:
    def refuse(name):
        raise ValueError(f"{path} holds {name}: not valid JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.mark.parametrize("task", ["qqbrowser", "yt8m"])
def test_index_opens_with_a_leaderboard_of_models_folds_out_of_fold_and_the_ensemble(tmp_path, task):
    metric = get_task(task).METRIC  # the contract names the metric; nothing is guessed from keys
    pipe = load_pipeline(_pipeline(tmp_path, task))
    _write_run(pipe, _metrics_as_the_notebooks_write_them(metric), {s.name for s in pipe.steps})
    index = write_index(pipe, read_results(pipe))

    (board,) = _strict_json(pipe.run_dir / "index.json")["leaderboards"]
    assert (board["task"], board["metric"]) == (task, metric)
    rows = {r["name"]: r for r in board["rows"]}
    assert [r["name"] for r in board["rows"]] == ["ensemble", "inference-b", "inference-a"]  # best first
    b = rows["inference-b"]
    assert (b["kind"], b["architecture"]) == ("model", "net_b")
    assert b["folds"] == {"0": 0.80, "1": 0.86, "2": 0.83}
    assert b["fold_mean"] == pytest.approx(statistics.mean(FOLDS["finetune-b"]))
    assert b["fold_sd"] == pytest.approx(statistics.stdev(FOLDS["finetune-b"]))
    assert (b["oof"], b["oof_parts"]) == (0.831, {"-1": 0.82, "0": 0.83})
    assert rows["inference-a"]["fold_mean"] == pytest.approx(0.72)
    ens = rows["ensemble"]
    assert (ens["kind"], ens["oof"], ens["test"]) == ("ensemble", 0.845, 0.812)
    assert ens["members"] == {"inference-a": 0.3, "inference-b": 0.7}

    page = index.read_text()
    assert page.index("Leaderboard") < page.index("<h2>Steps")
    assert f"Best out-of-fold {metric}: <b>0.8450</b> by <b>ensemble</b> (test 0.8120)" in page
    assert "+0.0140 over the best single model inference-b (0.8310)" in page
    assert "<td>0.8300 ± 0.0300</td>" in page and "<td>0.8600</td>" in page
    assert "inference-a × 0.30<br>inference-b × 0.70" in page
    assert '<a href="ensemble/step.html">ensemble</a>' in page
    assert '<img src="leaderboard.png"' in page
    assert (pipe.run_dir / "leaderboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_still_going_shows_its_finished_folds(tmp_path):
    pipe = load_pipeline(_pipeline(tmp_path, "qqbrowser"))
    done = {"pretrain", "finetune-a-fold0", "finetune-a-fold2"}  # fold 1 and everything after: not yet
    _write_run(pipe, _metrics_as_the_notebooks_write_them("spearman"), done)
    write_index(pipe, read_results(pipe))
    (board,) = _strict_json(pipe.run_dir / "index.json")["leaderboards"]
    (row,) = board["rows"]
    assert (row["name"], row["kind"], row["oof"]) == ("inference-a", "model", None)
    assert row["folds"] == {"0": 0.70, "2": 0.72} and row["fold_mean"] == pytest.approx(0.71)
    page = (pipe.run_dir / "index.html").read_text()
    assert "No out-of-fold spearman yet." in page
    assert page.count("<td>pending</td>") == len(pipe.steps) - len(done)


def test_fine_tuned_folds_that_no_step_scores_get_a_row_of_their_own(tmp_path):
    pipe = load_pipeline(_pipeline(tmp_path, "qqbrowser", until="finetune-b"))
    _write_run(pipe, _metrics_as_the_notebooks_write_them("spearman"), {s.name for s in pipe.steps})
    write_index(pipe, read_results(pipe))
    rows = _strict_json(pipe.run_dir / "index.json")["leaderboards"][0]["rows"]
    assert [(r["name"], r["kind"], len(r["folds"])) for r in rows] == [
        ("finetune-a", "folds", 3),
        ("finetune-b", "folds", 3),
    ]
    assert "folds only: no out-of-fold score yet" in (pipe.run_dir / "index.html").read_text()


def test_a_non_finite_score_is_shown_as_such_and_the_index_stays_valid_json(tmp_path):
    pipe = load_pipeline(_pipeline(tmp_path, "qqbrowser"))
    metrics = _metrics_as_the_notebooks_write_them("spearman")
    metrics["finetune-b-fold1"]["spearman"] = float("nan")  # save_metrics writes null
    metrics["inference-b"]["spearman_oof"] = float("nan")
    _write_run(pipe, metrics, {s.name for s in pipe.steps})
    write_index(pipe, read_results(pipe))
    rows = {r["name"]: r for r in _strict_json(pipe.run_dir / "index.json")["leaderboards"][0]["rows"]}
    assert rows["inference-b"]["folds"]["1"] is None and rows["inference-b"]["oof"] is None
    assert rows["inference-b"]["fold_mean"] == pytest.approx(0.815)  # the finite folds
    assert [r for r in rows][-1] == "inference-b"  # no score: last
    assert "<td>non-finite</td>" in (pipe.run_dir / "index.html").read_text()


def test_steps_without_a_task_get_no_leaderboard_but_their_step_table(tmp_path):
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = new_code_cell('out_dir: str = "x"')
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    nbformat.write(nb, tmp_path / "plain.ipynb")
    spec = {
        "run_dir": str(tmp_path / "run"),
        "steps": [{"name": "only", "notebook": str(tmp_path / "plain.ipynb")}],
    }
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec))
    pipe = load_pipeline(tmp_path / "p.yaml")
    write_index(pipe, read_results(pipe))
    assert _strict_json(pipe.run_dir / "index.json")["leaderboards"] == []
    page = (pipe.run_dir / "index.html").read_text()
    assert (
        "Leaderboard" not in page
        and "<td>only</td>" in page
        and not (pipe.run_dir / "leaderboard.png").exists()
    )


def test_read_step_scores_reads_each_notebooks_keys():
    fold = read_step_scores({"spearman": 0.8, "spearman_before": 0.7, "fold": 2}, "spearman")
    assert (fold.score, fold.oof, fold.ensemble) == (0.8, None, None)
    model = read_step_scores(
        {"spearman_oof": 0.81, "spearman_oof_0": 0.8, "spearman_fold_mean": 0.79}, "spearman"
    )
    assert (model.score, model.oof, model.oof_parts, model.fold_mean) == (None, 0.81, {"0": 0.8}, 0.79)
    ens = read_step_scores(
        {
            "spearman_oof_ensemble": 0.9,
            "spearman_oof_m1": 0.8,
            "weight_m1": 0.25,
            "weight_m2": 0.75,
            "test_spearman": None,
        },
        "spearman",
        ["m1", "m2"],
    )
    assert (ens.ensemble, ens.oof, ens.weights, ens.oof_parts) == (0.9, None, {"m1": 0.25, "m2": 0.75}, {})
    assert ens.test != ens.test  # null (non-finite) reads as NaN, absent as None


def test_an_ensemble_worse_than_its_best_model_is_said_so(tmp_path):
    pipe = load_pipeline(_pipeline(tmp_path, "qqbrowser"))
    metrics = _metrics_as_the_notebooks_write_them("spearman")
    metrics["ensemble"]["spearman_oof_ensemble"] = 0.8
    _write_run(pipe, metrics, {s.name for s in pipe.steps})
    write_index(pipe, read_results(pipe))
    page = (pipe.run_dir / "index.html").read_text()
    assert (
        "Best out-of-fold spearman: <b>0.8310</b> by <b>inference-b</b>; the ensemble ensemble scores 0.8000 (-0.0310)."
        in page
    )


def test_a_model_that_learns_online_explains_why_its_out_of_fold_score_differs_from_its_fold_mean(tmp_path):
    from vmmlib.app.leaderboard import Leaderboard, Row, leaderboard_html

    row = Row(
        "inference-vit", "model", folds={0: 0.41}, fold_mean=0.41, oof=0.55, oof_parts={"offline": 0.40}
    )
    page = leaderboard_html(Leaderboard("muge", "mean_recall", [row]), tmp_path)
    assert "learns online at prediction time" in page and "0.4100" in page and "0.4000" in page
