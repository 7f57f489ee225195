"""`vmm track` / `vmm run --track`: run folders logged to a temporary sqlite MLflow store and read back
with `mlflow.search_runs` (skipped without MLflow, an optional extra)."""

import pytest

from tests.test_compare import make_pipeline
from vmmlib.app.cli import main

mlflow = pytest.importorskip("mlflow")


def test_a_pipeline_folder_is_logged_once_per_step_with_params_metrics_curves_artifacts_and_tags(
    tmp_path, capsys
):
    run = make_pipeline(tmp_path / "qq", lr=0.01, score=0.8, fingerprint="abc")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["track", str(run), "--uri", uri]) == 0
    assert main(["track", str(run), "--uri", uri]) == 0  # idempotent: same folders, same fingerprints
    status = run / "finetune-fold1" / "status.json"
    status.write_text(status.read_text().replace('"ok"', '"failed"'))
    assert main(["track", str(run / "finetune-fold1"), "--uri", uri]) == 0  # another status: logged again
    assert "finetune-fold1: MLflow run" in capsys.readouterr().out

    mlflow.set_tracking_uri(uri)
    try:
        runs = mlflow.search_runs(experiment_names=["demo"], order_by=["tags.`vmm.step`", "status"])
        assert list(runs["tags.vmm.step"]) == ["finetune-fold0", "finetune-fold1", "finetune-fold1"]
        assert list(runs["status"]) == ["FINISHED", "FAILED", "FINISHED"]
        first = runs.iloc[0]
        assert first["params.optim.lr"] == "0.01" and first["params.task"] == "qqbrowser"
        assert first["metrics.spearman"] == pytest.approx(0.8) and "metrics.note" not in runs
        assert first["tags.vmm.fingerprint"] == "abc0" and first["tags.vmm.fold"] == "0"
        assert first["tags.vmm.pipeline"] == "demo" and first["status"] == "FINISHED"
        client = mlflow.tracking.MlflowClient(uri)
        curve = client.get_metric_history(first["run_id"], "train/loss")
        assert [m.step for m in curve] == [2, 4, 6, 8]
        evals = client.get_metric_history(first["run_id"], "eval/spearman")
        assert [(m.step, m.value) for m in evals] == [(4, pytest.approx(0.4)), (8, pytest.approx(0.8))]
        artifacts = {a.path for a in client.list_artifacts(first["run_id"])}
        assert {"20_finetune.html", "metrics.json", "params.yaml"} <= artifacts
    finally:
        mlflow.set_tracking_uri(None)
