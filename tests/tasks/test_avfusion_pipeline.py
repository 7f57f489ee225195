"""The shipped avfusion sample pipeline (`params/pipelines/avfusion_sample.yaml`), shortened, runs the five
notebooks with `task: avfusion` end to end on real mp4 files: the notebooks' own asserts hold
(fine-tuning improves every fold, the ensemble is no worse than its best model, the rankings
validate), the index carries both retrieval directions' recall, and `vmm validate` / `vmm evaluate`
accept the submission."""

from pathlib import Path

from vmmlib.app.cli import main

ROOT = Path(__file__).resolve().parents[2]
SHORT = {  # step name → extra `set` values: fewer steps than the demo, same recipes
    "explore": {},
    "pretrain": {"steps": 20, "eval_every": 20},
    "finetune-cos": {"steps": 30, "eval_every": 15},
    "finetune-itm": {"steps": 30, "eval_every": 15},
    "inference-cos": {},
    "inference-itm": {},
    "ensemble": {"search_iter": 6, "search_init_points": 3},
}


def test_the_avfusion_sample_pipeline_runs_every_notebook_end_to_end(tmp_path, run_short_pipeline):
    index = run_short_pipeline("avfusion_sample", SHORT)
    for model in ("cos", "itm"):
        inference = index[f"inference-{model}"]
        assert {f"score_oof_{d}_r{k}" for d in ("t2v", "v2t") for k in (1, 5, 10)} <= set(inference)
        assert {"score_oof_t2v_medianR", "score_oof_v2t_meanR"} <= set(inference)
        assert 0 < inference["score_oof"] <= 1 and inference["folds"] == 2
        for fold in (0, 1):
            finetune = index[f"finetune-{model}-fold{fold}"]
            assert finetune["score"] > finetune["score_before"]
    ensemble = index["ensemble"]
    assert (
        ensemble["score_oof_ensemble"]
        >= max(ensemble["score_oof_inference-cos"], ensemble["score_oof_inference-itm"]) - 0.02
    )
    assert 0 < ensemble["test_r10"] <= 100 and "test_medianR" in ensemble
    submission = tmp_path / "run/ensemble/submission.jsonl"
    assert main(["validate", "avfusion", str(submission), "--data-dir", str(tmp_path / "data")]) == 0
    truth = str(tmp_path / "data/retrieval/test.jsonl")
    assert main(["evaluate", "avfusion", "--pred", str(submission), "--truth", truth]) == 0
