"""The shipped MUGE sample pipeline (`params/pipelines/muge_sample.yaml`), shortened, runs the notebooks
with `task: muge` end to end: the notebooks' own asserts hold (fine-tuning improves valid mean recall,
the ensemble is no worse than its best model, the jsonl validates), and the index shows recall per
model in both directions, with and without online learning, and for the ensemble."""

from pathlib import Path

from vmmlib.app.cli import main

ROOT = Path(__file__).resolve().parents[2]
SHORT = {  # step name → extra `set` values: fewer steps than the demo, same recipes
    "explore": {},
    "finetune-vit": {"steps": 60, "eval_every": 30},
    "finetune-prior": {"steps": 60, "eval_every": 30},
    "inference-vit": {},
    "inference-prior": {},
    "ensemble": {"search_iter": 6, "search_init_points": 3},
}


SAMPLE = {
    "seed": 0,
    "image_size": 64,
    "train_texts": 300,
    "valid_texts": 60,
    "test_texts": 30,
    "distractors": 30,
    "novel_topics": 8,
}


def test_the_muge_sample_pipeline_runs_every_notebook_end_to_end(tmp_path, run_short_pipeline):
    index = run_short_pipeline("muge_sample", SHORT, sample=SAMPLE)
    for model in ("vit", "prior"):
        finetune = index[f"finetune-{model}"]
        assert finetune["mean_recall"] > finetune["mean_recall_before"]
        inference = index[f"inference-{model}"]
        assert 0 < inference["mean_recall_oof"] <= 1 and inference["folds"] == 1
        assert {"mean_recall_oof_i2t", "mean_recall_oof_t2i_r1", "mean_recall_oof_i2t_r10"} <= set(inference)
    online = index["inference-vit"]
    assert "mean_recall_oof_offline" in online and "mean_recall_oof_offline_i2t" in online  # both figures
    assert "mean_recall_oof_offline" not in index["inference-prior"]  # offline model: one figure
    ensemble = index["ensemble"]
    best = max(ensemble["mean_recall_oof_inference-vit"], ensemble["mean_recall_oof_inference-prior"])
    assert ensemble["mean_recall_oof_ensemble"] >= best - 0.02
    submission = tmp_path / "run/ensemble/test_predictions.jsonl"
    assert (
        main(["validate", "muge", str(submission), "--data-dir", str(tmp_path / "data"), "--split", "test"])
        == 0
    )
