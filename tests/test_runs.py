import json
import math

import pytest
import yaml

from vmmlib.runs import check_choice, injected_names, notebook_params, project_root, save_metrics, start_run


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
