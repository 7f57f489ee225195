import json

import numpy as np
import pytest
import torch
from torch import nn

from vmmlib import dryrun
from vmmlib.predict.loop import predict_all
from vmmlib.runs import save_metrics


@pytest.fixture
def dry():
    dryrun.set_active(True)
    yield
    dryrun.set_active(False)


def test_dry_run_caps_steps_probes_online_rounds_and_moves_out_dir():
    params = {
        "dry_run": True, "steps": 15600, "eval_every": 1000, "warmup_steps": 1560, "save_every": 1000,
        "predict_options": {"online_epochs": 50, "online_lr": 1e-5}, "search_init_points": 5,
        "search_iter": 20, "out_dir": "runs/wbdc/model1/finetune-fold{fold}", "max_items_per_split": 0,
    }  # fmt: skip
    changes = dryrun.dry_run_params(params)
    assert changes == {
        "steps": 2, "eval_every": 2, "warmup_steps": 1, "save_every": 2,
        "predict_options": {"online_epochs": 1, "online_lr": 1e-5}, "search_init_points": 2,
        "search_iter": 1, "out_dir": "runs/wbdc/model1/finetune-fold{fold}-dry-run",
        "max_items_per_split": dryrun.DRY_RUN_ITEMS,
    }  # fmt: skip
    assert dryrun.dry_run_params({**params, "dry_run": False}) == {}


def test_dry_run_out_dir_inside_a_dry_run_pipeline_folder_is_kept():
    assert (
        dryrun.dry_out_dir("runs/wbdc_full-dry-run/finetune-fold0") == "runs/wbdc_full-dry-run/finetune-fold0"
    )
    assert dryrun.dry_out_dir("runs/x/") == "runs/x-dry-run"


def test_apply_dry_run_rewrites_the_notebook_namespace_and_marks_metrics(tmp_path, capsys):
    namespace = {"dry_run": True, "steps": 80, "eval_every": 0, "out_dir": str(tmp_path / "ft")}
    try:
        dryrun.apply_dry_run(namespace)
        assert namespace["steps"] == 2 and namespace["eval_every"] == 0
        assert namespace["out_dir"] == str(tmp_path / "ft-dry-run")
        assert "DRY RUN" in capsys.readouterr().out
        save_metrics(tmp_path, {"f1": 0.5})
        assert json.loads((tmp_path / "metrics.json").read_text()) == {"dry_run": True, "f1": 0.5}
    finally:
        dryrun.set_active(False)
    save_metrics(tmp_path, {"f1": 0.5})
    assert "dry_run" not in json.loads((tmp_path / "metrics.json").read_text())


class _Count(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0
        self.lin = nn.Linear(2, 3)

    def forward(self, x):
        self.calls += 1
        return self.lin(x)


def _items(n):
    return [{"x": torch.full((2,), float(i)), "id": str(i)} for i in range(n)]


def test_dry_run_prediction_runs_few_batches_but_keeps_every_id_and_shape(dry):
    model = _Count()
    ids, out = predict_all(model, _items(23), lambda m, b: m(b["x"]), batch_size=4, device="cpu")
    assert ids == [str(i) for i in range(23)] and out.shape == (23, 3)
    assert model.calls == dryrun.DRY_RUN_BATCHES
    assert np.isfinite(out).all()


def test_dry_run_counts_items_not_the_rows_of_a_flattened_value(dry):
    # avfusion QA batches: a list of the batch's skipped videos first (often empty), K test clips per
    # question flattened ((B·K, ...) frames), then the per-question values
    def collate(items):
        return {"skipped": [], "frames": torch.stack([x["x"] for x in items]).repeat(3, 1),
                "x": torch.stack([x["x"] for x in items]), "id": [x["id"] for x in items]}  # fmt: skip

    ids, out = predict_all(_Count(), _items(23), lambda m, b: m(b["x"]), batch_size=4, device="cpu",
                           collate_fn=collate)  # fmt: skip
    assert len(ids) == 23 and out.shape == (23, 3)


def test_prediction_outside_a_dry_run_runs_every_batch():
    model = _Count()
    _, out = predict_all(model, _items(23), lambda m, b: m(b["x"]), batch_size=4, device="cpu")
    assert model.calls == 6 and out.shape == (23, 3)
