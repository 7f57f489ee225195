"""The shipped WBDC sample pipeline (`params/pipelines/wbdc_sample.yaml`), shortened, runs the five
notebooks with `task: wbdc` end to end: the notebooks' own asserts hold (fine-tuning improves every
fold, the ensemble is no worse than its best model, result.csv validates), the ensemble writes the
teacher file a distilled student trains on, the index carries the F1-mean rows of every model, the
ensembles and the student, and `vmm validate wbdc` accepts the submission."""

from pathlib import Path

from vmmlib.app.cli import main

ROOT = Path(__file__).resolve().parents[2]
SHORT = {  # step name → extra `set` values: fewer steps and folds than the demo, same recipes
    "explore": {},
    "pretrain": {"steps": 20, "eval_every": 20},
    "finetune-pretrained": {"steps": 40, "eval_every": 20},
    "finetune-scratch": {"steps": 40, "eval_every": 20},
    "inference-pretrained": {},
    "inference-scratch": {},
    "ensemble": {"search_init_points": 3, "search_iter": 4},
    "finetune-student": {"steps": 40, "eval_every": 20},
    "inference-student": {},
    "final-ensemble": {"search_init_points": 3, "search_iter": 4},
}


SAMPLE = {"labeled": 160, "unlabeled": 80, "test": 20, "raw_frame_videos": 2, "seed": 0}


def test_the_wbdc_sample_pipeline_runs_every_notebook_end_to_end(tmp_path, run_short_pipeline):
    index = run_short_pipeline("wbdc_sample", SHORT, sample=SAMPLE, folds=2, n_folds=True)
    for model in ("pretrained", "scratch", "student"):
        assert (
            0 < index[f"inference-{model}"]["mean_f1_oof"] <= 1 and index[f"inference-{model}"]["folds"] == 2
        )
        for fold in (0, 1):
            finetune = index[f"finetune-{model}-fold{fold}"]
            assert finetune["mean_f1"] > finetune["mean_f1_before"]
    assert index["pretrain"]["pretrain_acc"] >= 0
    for name, models in (("ensemble", 2), ("final-ensemble", 3)):
        ensemble = index[name]
        singles = [v for k, v in ensemble.items() if k.startswith("mean_f1_oof_inference-")]
        assert len(singles) == models and ensemble["mean_f1_oof_ensemble"] >= max(singles) - 0.02
    assert "mean_f1_oof_inference-student" in index["final-ensemble"]
    assert (tmp_path / "run/ensemble/teacher.npz").exists()
    csv = tmp_path / "run/ensemble/result.csv"
    assert (
        main(["validate", "wbdc", str(csv), "--data-dir", str(tmp_path / "data"), "--split", "test_a"]) == 0
    )
