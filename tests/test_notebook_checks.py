"""Notebooks check their parameters before reading any data: a bad training argument, objective
weight or fit option fails at once with the valid choices, never after a cache build."""

from pathlib import Path

import papermill
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("notebook", "params", "message"),
    [
        ("20_finetune", {"schedule": "cosin", "objectives": {"mse": -1.0}}, "finite numbers >= 0"),
        ("10_pretrain", {"lr": -1.0, "schedule": "cosin"}, "schedule='cosin' \\(one of linear, cosine"),
        (
            "10_pretrain",
            {"fit_options": {"adversary": "fgm"}},
            "unknown fit option.*adversary.*valid fit options",
        ),
    ],
)
def test_bad_parameters_fail_before_any_data_is_read(notebook, params, message, tmp_path):
    missing = tmp_path / "no-data-here"
    with pytest.raises(papermill.PapermillExecutionError, match=message):
        papermill.execute_notebook(
            str(ROOT / "notebooks" / f"{notebook}.ipynb"),
            str(tmp_path / "out.ipynb"),
            parameters={
                "data_dir": str(missing),
                "make_sample": False,
                "out_dir": str(tmp_path / "run"),
                **params,
            },
            progress_bar=False,
            cwd=str(ROOT),
        )
    assert not missing.exists() and not (tmp_path / "run").exists()  # nothing read, no run folder made
