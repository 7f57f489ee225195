"""`vmm compare`: parameters that differ, metric deltas and overlaid curves of tiny synthetic run
folders (the files a notebook writes: params.yaml, metrics.json, history.csv, status.json)."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml

from vmmlib.app.cli import main
from vmmlib.app.compare import compare_runs


def make_step(folder: Path, *, lr: float, score: float, fold: int = 0, fingerprint: str = "f0") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    params = {"task": "qqbrowser", "optim": {"lr": lr, "epochs": 2}, "fold": fold, "out_dir": str(folder)}
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    (folder / "metrics.json").write_text(json.dumps({"spearman": score, "loss": 1 - score, "note": "x"}))
    steps = [2, 4, 6, 8]
    pd.DataFrame({
        "step": steps, "epoch": [0, 0, 1, 1], "train/loss": [1.0, 0.5 * lr * 100, 0.3, 0.2],
        "eval/spearman": [None, score / 2, None, score],
    }).to_csv(folder / "history.csv", index=False)  # fmt: skip
    (folder / "status.json").write_text(
        json.dumps({"name": folder.name, "status": "ok", "fingerprint": fingerprint})
    )
    (folder / "20_finetune.html").write_text("<html>report</html>")
    return folder


def make_pipeline(root: Path, *, lr: float, score: float, fingerprint: str = "f0") -> Path:
    names = ["finetune-fold0", "finetune-fold1"]
    for k, name in enumerate(names):
        make_step(root / name, lr=lr, score=score + k / 100, fold=k, fingerprint=f"{fingerprint}{k}")
    steps = [{"name": n, "status": "ok"} for n in names]
    (root / "index.json").write_text(json.dumps({"pipeline": "demo", "steps": steps}))
    return root


def test_two_step_folders_show_the_changed_parameter_the_metric_delta_and_the_curves(tmp_path):
    a = make_step(tmp_path / "a", lr=0.01, score=0.80)
    b = make_step(tmp_path / "b", lr=0.02, score=0.85)
    result = compare_runs([a, b], html=tmp_path / "cmp.html")
    (step,) = result.steps
    assert step.params == [("optim.lr", [0.01, 0.02])]  # out_dir differs only by the run's own folder
    assert dict(step.metrics)["spearman"] == [0.80, 0.85]
    table = result.table()
    assert "optim.lr" in table and "0.85 (+0.05)" in table and "out_dir" not in table
    page = (tmp_path / "cmp.html").read_text()
    assert "optim.lr" in page and "data:image/png;base64," in page and "+0.05" in page


def test_two_pipelines_are_matched_step_by_step_and_the_cli_prints_the_table(tmp_path, capsys):
    a = make_pipeline(tmp_path / "sample", lr=0.01, score=0.8)
    b = make_pipeline(tmp_path / "changed", lr=0.03, score=0.7)
    (b / "finetune-fold1" / "metrics.json").unlink()
    make_step(a / "ensemble", lr=0.01, score=0.9)
    index = json.loads((a / "index.json").read_text())
    (a / "index.json").write_text(json.dumps({**index, "steps": [*index["steps"], {"name": "ensemble"}]}))
    assert main(["compare", str(a), str(b), "--html", str(tmp_path / "c.html")]) == 0
    out = capsys.readouterr().out
    assert "== finetune-fold0" in out and "== finetune-fold1" in out and "only in A: ensemble" in out
    assert "0.7 (-0.1)" in out and "optim.lr" in out
    assert re.search(r"finetune-fold0\s+spearman\s+0.8\s+0.7 \(-0.1\)", out)  # the summary: one line per step
    assert "report: " in out and (tmp_path / "c.html").exists()


def test_comparing_a_step_with_a_pipeline_or_a_single_run_is_refused(tmp_path):
    a = make_step(tmp_path / "a", lr=0.01, score=0.80)
    p = make_pipeline(tmp_path / "p", lr=0.01, score=0.8)
    with pytest.raises(ValueError, match="step folders with step folders"):
        compare_runs([a, p], write=False)
    with pytest.raises(ValueError, match="at least two"):
        compare_runs([a], write=False)
