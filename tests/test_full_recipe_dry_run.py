"""One full recipe per task dry-runs at its real model size (issue 17.3), through the same script that
makes the README's table (`benchmarks/full_recipes.py`): local backbones built from the real configs,
the task's sample data, every batch capped at 2 so that each step takes minutes on 2 CPU cores.

Slow: it runs only with VMM_RUN_SLOW=1 (`VMM_RUN_SLOW=1 pytest -m slow tests/test_full_recipe_dry_run.py`).
The yt8m step is quickest (about 1 minute); the avfusion QA fine-tune (VideoMAE-base + DeBERTa-v2-base
+ a BERT-base fusion stack over 16 frames of 224², from scratch) takes longest."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
STEP = {  # task → the step dry-run (a pipeline step's name: its recipe, fold 0)
    "yt8m": "pretrain-gated-netvlad",
    "qqbrowser": "pretrain-mixnextvlad",
    "wbdc": "finetune-model1",  # from scratch: its pretraining is left out
    "muge": "finetune-cnclip-vitb16",
    "avfusion": "finetune-qa",
}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("full_recipes")  # backbones are built once for every task


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("VMM_RUN_SLOW"), reason="real-size dry run: set VMM_RUN_SLOW=1")
@pytest.mark.parametrize("task", sorted(STEP))
def test_one_full_recipe_per_task_dry_runs_at_its_real_size(task, work):
    out = work / f"{task}.md"
    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/full_recipes.py"), "--work", str(work), "--tasks", task,
         "--only", STEP[task], "--max-batch", "2", "--mem-limit-gib", "20", "--timeout-min", "40",
         "--out", str(out)],
        check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    rows = json.loads(out.with_suffix(".json").read_text())
    assert len(rows) == 1, rows
    row = rows[0]
    assert row["status"].startswith("ok"), row
    assert row["dry_run_in_metrics"] is True and row["params"] > 10_000_000  # a real size, not a sample model
    runs = work / "runs" / f"{task}_full-dry-run"
    run = next(d for d in (runs / STEP[task], runs / f"{STEP[task]}-fold0") if d.is_dir())
    recorded = yaml.safe_load((run / "params.yaml").read_text())
    assert recorded["steps"] == 2 and recorded["dry_run"] is True and recorded["batch_size"] <= 2
    assert not (work / "runs" / f"{task}_full").exists()  # a dry run never writes the real run's folder
