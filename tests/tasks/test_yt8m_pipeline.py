"""The shipped YouTube-8M sample pipeline (`params/pipelines/yt8m_sample.yaml`), shortened, runs the
five notebooks with `task: yt8m` end to end: the notebooks' own asserts hold (fine-tuning improves
every fold, the ensemble is no worse than its best model, the CSV validates), the index carries
the per-shift out-of-fold scores, and `vmm validate` accepts the submission."""

from pathlib import Path

from vmmlib.app.cli import main

ROOT = Path(__file__).resolve().parents[2]
SHORT = {  # step name → extra `set` values: fewer steps and folds than the demo, same recipes
    "explore": {},
    "pretrain-bert": {"steps": 30, "eval_every": 15},
    "pretrain-mean": {"steps": 30, "eval_every": 15},
    "finetune-bert": {"steps": 40, "eval_every": 20},
    "finetune-mean": {"steps": 40, "eval_every": 20},
    "inference-bert": {},
    "inference-mean": {},
    "ensemble": {"search_iter": 8},
}


SAMPLE = {"seed": 0, "videos": 120, "validate_videos": 96, "test_videos": 20}


def test_the_yt8m_sample_pipeline_runs_every_notebook_end_to_end(tmp_path, run_short_pipeline):
    index = run_short_pipeline("yt8m_sample", SHORT, sample=SAMPLE, folds=2)
    for model in ("bert", "mean"):
        inference = index[f"inference-{model}"]
        assert {f"segment_map_oof_shift{s}" for s in ("-1", "+0", "+1")} <= set(inference)
        assert 0 < inference["segment_map_oof"] <= 1 and inference["folds"] == 2
        for fold in (0, 1):
            finetune = index[f"finetune-{model}-fold{fold}"]
            assert finetune["segment_map"] > finetune["segment_map_before"]
    ensemble = index["ensemble"]
    assert (
        ensemble["segment_map_oof_ensemble"]
        >= max(ensemble["segment_map_oof_inference-bert"], ensemble["segment_map_oof_inference-mean"]) - 0.02
    )
    csv = next((tmp_path / "run/ensemble").glob("*.csv"))
    assert main(["validate", "yt8m", str(csv), "--data-dir", str(tmp_path / "data")]) == 0
