import json
import math

import pytest
import yaml

from vmmlib.options import check_choice
from vmmlib.runs import (
    injected_names,
    notebook_params,
    params_fingerprint,
    project_root,
    save_metrics,
    start_run,
)


def _namespace(cells, **values):
    annotations = {"task": str, "steps": int, "lr": float, "fold": "int | None"}
    ns = {
        "__annotations__": annotations,
        "In": ["", *cells],
        "task": "qqbrowser",
        "steps": 3,
        "lr": 1e-3,
        "fold": None,
    }
    ns.update(values)
    return ns


def test_notebook_params_collects_declared_parameters():
    assert notebook_params(_namespace([])) == {"task": "qqbrowser", "steps": 3, "lr": 1e-3, "fold": None}


def test_an_injected_unknown_parameter_fails_listing_the_valid_ones():
    ns = _namespace(["# Parameters\nstepz = 10\nlr = 0.1\n"])
    with pytest.raises(
        ValueError, match=r"unknown parameter\(s\) stepz; valid parameters: fold, lr, steps, task"
    ):
        notebook_params(ns)


def test_a_value_of_the_wrong_type_fails():
    with pytest.raises(ValueError, match="steps='ten' should be"):
        notebook_params(_namespace([], steps="ten"))
    assert notebook_params(_namespace([], lr=1, fold=3))["lr"] == 1  # int is a fine float; int|None takes int


def test_injected_names_reads_only_papermill_cells():
    assert injected_names(["x = 1", "# Parameters\na = 1\nb, c = 2, 3\nd = 4\n"]) == {"a", "d"}


def test_check_choice_lists_the_choices():
    with pytest.raises(ValueError, match="unknown model 'x'; valid choices: a, b"):
        check_choice("model", "x", ["b", "a"])


def test_run_folder_holds_params_and_valid_json_metrics(tmp_path):
    run = start_run(tmp_path / "r", {"steps": 3, "path": tmp_path})
    assert yaml.safe_load((run / "params.yaml").read_text()) == {"steps": 3, "path": str(tmp_path)}
    save_metrics(run, {"spearman": math.nan, "n": 2})
    assert json.loads((run / "metrics.json").read_text()) == {"spearman": None, "n": 2}


def test_project_root_is_found_from_the_notebooks_folder(tmp_path):
    (tmp_path / "params").mkdir()
    (tmp_path / "notebooks").mkdir()
    assert project_root(tmp_path / "notebooks") == tmp_path.resolve()


# --------------------------------------------------------------------------- a rerun never reports a stale run

FINETUNE = {
    "task": "qqbrowser",
    "fold": 0,
    "lr": 2e-3,
    "save_every": 0,
    "save_minutes": 5.0,
    "restart": False,
}


def _finished_run(folder):
    """What `fit` leaves in a run folder."""
    (folder / "checkpoints" / "last").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "history.csv").write_text("step\n1\n")
    (folder / "metrics.json").write_text("{}")


def test_out_dir_fields_are_filled_from_the_parameters(tmp_path):
    params = {**FINETUNE, "fold": 1, "out_dir": str(tmp_path / "finetune-fold{fold}")}
    run = start_run(params["out_dir"], params)
    assert run == tmp_path / "finetune-fold1" and run.is_dir()
    assert yaml.safe_load((run / "params.yaml").read_text())["out_dir"] == str(run)
    with pytest.raises(ValueError, match="'folds'.*parameter name: fold, lr, out_dir"):
        start_run(tmp_path / "x-{folds}", params)


def test_a_folder_holding_a_run_made_with_other_parameters_is_refused_naming_each_difference(tmp_path):
    run = start_run(tmp_path / "r", FINETUNE)
    _finished_run(run)
    with pytest.raises(
        ValueError, match=r"other parameters: fold: 0 → 1; lr: 0.002 → 0.001\. Pass restart=True"
    ):
        start_run(tmp_path / "r", {**FINETUNE, "fold": 1, "lr": 1e-3})
    assert (run / "model.safetensors").exists()
    # Same parameters (a rerun after a kill) keep the run, so fit resumes it.
    assert start_run(tmp_path / "r", FINETUNE) == run and (run / "checkpoints/last").is_dir()


def test_parameters_that_do_not_change_results_are_left_out_of_the_fingerprint(tmp_path):
    run = start_run(tmp_path / "r", FINETUNE)
    _finished_run(run)
    other = {**FINETUNE, "save_every": 10, "save_minutes": 0.0, "make_sample": True, "out_dir": "elsewhere"}
    assert (
        params_fingerprint(other)
        == params_fingerprint(FINETUNE)
        != params_fingerprint({**FINETUNE, "fold": 1})
    )
    assert start_run(tmp_path / "r", other) == run
    assert json.loads((run / "run.json").read_text())["fingerprint"] == params_fingerprint(FINETUNE)


def test_restart_clears_the_old_fit_outputs_and_starts_afresh(tmp_path):
    run = start_run(tmp_path / "r", FINETUNE)
    _finished_run(run)
    (run / "notes.txt").write_text("kept")
    new = {**FINETUNE, "fold": 1, "restart": True}
    assert start_run(tmp_path / "r", new) == run
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt", "params.yaml", "run.json"]
    assert json.loads((run / "run.json").read_text())["params"]["fold"] == 1


def test_a_folder_with_fit_outputs_but_no_recorded_parameters_is_refused(tmp_path):
    _finished_run(tmp_path / "r")
    with pytest.raises(ValueError, match="parameters that made it are not recorded"):
        start_run(tmp_path / "r", FINETUNE)
