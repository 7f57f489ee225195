"""A disappointing result is reported, not raised (issue 17.4): the warnings' wording, the metrics
table, and the pipeline index listing each step's warnings at its top."""

import math

from vmmlib.app.leaderboard import write_index
from vmmlib.app.pipeline import Pipeline
from vmmlib.app.report import ensemble_warnings, headline, improvement_warnings, metrics_table


def test_improvement_warns_unless_the_trained_score_is_higher_and_finite():
    assert improvement_warnings("fine-tuning", "spearman", 0.5, 0.4) == []
    assert improvement_warnings("fine-tuning", "spearman", 0.4, 0.4) == [
        "fine-tuning did not improve spearman: 0.4000 after, 0.4000 before"
    ]
    assert improvement_warnings("fine-tuning", "spearman", math.nan, 0.1)


def test_an_ensemble_warns_only_when_clearly_below_its_best_model():
    singles = {"inference-a": 0.70, "inference-b": 0.60}
    assert ensemble_warnings("mean_f1", 0.69, singles) == []
    (warning,) = ensemble_warnings("mean_f1", 0.60, singles)
    assert "clearly worse than its best model" in warning and "inference-a" in warning


def test_metrics_table_puts_warnings_first_and_the_headline_knows_each_notebook():
    table = metrics_table({"spearman": 0.5, "spearman_before": 0.1, "warnings": ["w"]})
    assert list(table.index) == ["warning", "spearman", "spearman_before"]
    assert headline({"spearman": 0.5, "spearman_before": 0.1}, "spearman")[1] == ("before fine-tuning", 0.1)
    ens = {"spearman_oof_ensemble": 0.8, "spearman_oof_inference-a": 0.7, "spearman_oof_inference-b": 0.75}
    assert headline(ens, "spearman")[1] == ("best single model (inference-b)", 0.75)


def test_the_index_lists_each_steps_warnings_above_the_leaderboard(tmp_path):
    pipe = Pipeline("p", tmp_path, 1, [])
    results = [
        {"name": "finetune-fold0", "status": "ok", "duration_s": 1.0, "error": None,
         "metrics": {"spearman": 0.1, "warnings": ["fine-tuning did not improve spearman"]}},
    ]  # fmt: skip
    page = write_index(pipe, results).read_text()
    assert page.index("fine-tuning did not improve") < page.index("<h2>Steps</h2>")
    assert "warnings = " not in page  # shown as warnings, not as a raw metric
