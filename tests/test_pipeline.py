import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_notebook

from vmmlib.app.pipeline import load_pipeline, run_pipeline
from vmmlib.app.pipeline_log import steps_table

STEP_SOURCE = """
import json, pathlib
from vmmlib.runs import notebook_params, save_metrics, start_run
params = notebook_params(globals())
run = start_run(out_dir, params)
if fail:
    raise RuntimeError("planned failure in " + out_dir)
save_metrics(run, {"value": value * 2, "fold": fold})
(pathlib.Path(out_dir) / "runs.txt").open("a").write("x")
"""


def _notebook(path: Path) -> Path:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = new_code_cell(
        'value: int = 1\nfold: int = -1\nn_folds: int = 0\nfail: bool = False\nout_dir: str = "x"'
    )
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, new_code_cell(STEP_SOURCE)]
    nbformat.write(nb, path)
    return path


def _pipeline(tmp_path: Path, *, fail_b: bool = False, resources=None) -> Path:
    nb = _notebook(tmp_path / "step.ipynb")
    spec = {
        "run_dir": str(tmp_path / "run"),
        "workers": 2,
        "steps": [
            {"name": "a", "notebook": str(nb), "set": {"value": 5}},
            {"name": "b", "notebook": str(nb), "after": ["a"], "folds": 2, "set": {"fail": fail_b}},
            {
                "name": "c",
                "notebook": str(nb),
                "after": ["b"],
                **({"resources": resources} if resources else {}),
            },
        ],
    }
    path = tmp_path / "pipe.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_load_pipeline_expands_folds_and_resolves_parameters(tmp_path):
    path = _pipeline(tmp_path)
    pipe = load_pipeline(path)
    assert [s.name for s in pipe.steps] == ["a", "b-fold0", "b-fold1", "c"]
    b1 = pipe.steps[2]
    assert b1.params == {
        "value": 1,
        "fold": 1,
        "n_folds": 2,
        "fail": False,
        "out_dir": str(tmp_path / "run" / "b-fold1"),
    }
    assert pipe.steps[3].after == ["b-fold0", "b-fold1"] and pipe.track is None
    path.write_text(path.read_text() + "track: sqlite:///runs/mlflow.db\n")  # the key --track overrides
    assert load_pipeline(path).track == "sqlite:///runs/mlflow.db"


def test_unknown_parameter_or_step_is_rejected_before_anything_runs(tmp_path):
    path = _pipeline(tmp_path)
    spec = yaml.safe_load(path.read_text())
    spec["steps"][0]["set"] = {"valeu": 3}
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(
        ValueError, match="unknown parameter.*valeu.*valid parameters: fail, fold, n_folds, out_dir, value"
    ):
        load_pipeline(path)
    spec["steps"][0]["set"] = {}
    spec["steps"][2]["after"] = ["zzz"]
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ValueError, match="unknown step 'zzz'"):
        load_pipeline(path)


def _mlflow_or_none():
    try:
        import mlflow
    except ImportError:
        return None
    return mlflow


def test_pipeline_runs_in_order_writes_index_and_skips_finished_steps(tmp_path, capsys):
    path = _pipeline(tmp_path)
    results = run_pipeline(path)
    assert [r["status"] for r in results] == ["ok"] * 4
    printed = capsys.readouterr().out  # each step's start and end as it happens, then a table
    assert "start  a" in printed and printed.index("start  a") < printed.index("ok     a (1/4) in ")
    assert "ok     c (4/4) in " in printed
    table = steps_table(results).splitlines()
    assert table[0].split() == ["step", "status", "duration", "metrics"] and table[-1].startswith("4 steps, ")
    assert table[2].split()[:2] == ["a", "ok"] and "value 10" in table[2]
    run = tmp_path / "run"
    assert json.loads((run / "a" / "metrics.json").read_text()) == {"value": 10, "fold": -1}
    assert json.loads((run / "b-fold1" / "metrics.json").read_text())["fold"] == 1
    for step in ("a", "b-fold0", "b-fold1", "c"):
        assert (run / step / "step.ipynb").exists() and (run / step / "step.html").exists()
        assert (run / step / "params.yaml").exists()
    index = (run / "index.html").read_text()
    assert "b-fold1" in index and "value = 10" in index
    assert [s["status"] for s in json.loads((run / "index.json").read_text())["steps"]] == ["ok"] * 4

    again = run_pipeline(path, progress=False)  # identical parameters: nothing re-runs
    assert [r["status"] for r in again] == ["cached"] * 4
    assert (run / "a" / "runs.txt").read_text() == "x"

    spec = yaml.safe_load(path.read_text())
    spec["steps"][2]["set"] = {"value": 7}  # c changes: it re-runs from a clean folder, a and b stay
    path.write_text(yaml.safe_dump(spec))
    mlflow = _mlflow_or_none()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    third = run_pipeline(path, progress=False, track=uri if mlflow else None)
    assert [r["status"] for r in third] == ["cached", "cached", "cached", "ok"]
    if mlflow:  # --track: one MLflow run per step, found by search_runs with params and metrics
        mlflow.set_tracking_uri(uri)
        found = mlflow.search_runs(experiment_names=[path.stem], filter_string="tags.`vmm.step` = 'c'")
        assert found["metrics.value"].tolist() == [14] and found["params.value"].tolist() == ["7"]
        assert len(mlflow.search_runs(experiment_names=[path.stem])) == 4
        mlflow.set_tracking_uri(None)
    assert (run / "c" / "runs.txt").read_text() == "x"  # not "xx": nothing left over from the old run
    assert json.loads((run / "c" / "metrics.json").read_text())["value"] == 14


def test_a_killed_step_with_the_same_parameters_keeps_its_folder_to_resume(tmp_path):
    from vmmlib.app.pipeline import fingerprint, run_step

    step = load_pipeline(_pipeline(tmp_path)).steps[0]
    out = Path(step.out_dir)
    out.mkdir(parents=True)
    (out / "status.json").write_text(json.dumps({"status": "running", "fingerprint": fingerprint(step, [])}))
    (out / "checkpoint.txt").write_text("from the killed run")
    assert run_step(step)["status"] == "ok"
    assert (out / "checkpoint.txt").exists()


def test_a_failing_step_stops_its_dependants_and_names_its_notebook(tmp_path):
    results = {r["name"]: r for r in run_pipeline(_pipeline(tmp_path, fail_b=True), progress=False)}
    assert results["a"]["status"] == "ok"
    assert results["b-fold0"]["status"] == "failed"
    assert "planned failure" in results["b-fold0"]["error"]
    assert str(tmp_path / "run" / "b-fold0" / "step.ipynb") in results["b-fold0"]["error"]
    assert results["c"]["status"] == "blocked" and not (tmp_path / "run" / "c").exists()
    assert "planned failure" in (tmp_path / "run" / "index.html").read_text()


def test_a_step_asking_for_a_missing_resource_fails_up_front(tmp_path):
    with pytest.raises(RuntimeError, match="resource.*GPU.*no worker offers"):
        run_pipeline(_pipeline(tmp_path, resources={"GPU": 1}), progress=False, workers=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_pipeline_runs_on_an_existing_dask_cluster(tmp_path):
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    bindir = Path(sys.executable).parent
    dask = shutil.which("dask", path=str(bindir)) or "dask"
    procs = [
        subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]  # fmt: skip
    try:
        time.sleep(2)
        procs.append(
            subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--resources", "GPU=1", "--no-dashboard"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )  # fmt: skip
        from dask.distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(1, timeout=60)
        results = run_pipeline(_pipeline(tmp_path, resources={"GPU": 1}), scheduler=address, progress=False)
        assert [r["status"] for r in results] == ["ok"] * 4
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(timeout=30)


# --- the pipeline file is checked whole before anything runs (issue 9.7) ---------------------------


def _rewrite(path: Path, edit) -> Path:
    spec = yaml.safe_load(path.read_text())
    edit(spec)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_a_dependency_cycle_is_reported_as_a_cycle_naming_its_steps(tmp_path):
    def cycle(spec):
        spec["steps"][0]["after"] = ["c"]  # a → c → b → a

    path = _rewrite(_pipeline(tmp_path), cycle)
    with pytest.raises(ValueError, match=r"pipe\.yaml: steps a, b, c form a dependency cycle: a → c → b → a"):
        load_pipeline(path)


def test_steps_may_be_declared_before_the_steps_they_run_after(tmp_path):
    path = _rewrite(_pipeline(tmp_path), lambda spec: spec["steps"].reverse())  # c, b, a
    pipe = load_pipeline(path)
    assert [s.name for s in pipe.steps] == ["a", "b-fold0", "b-fold1", "c"]
    assert pipe.steps[3].after == ["b-fold0", "b-fold1"]


def test_a_step_without_a_name_is_refused_naming_the_file_and_its_position(tmp_path):
    path = _rewrite(_pipeline(tmp_path), lambda spec: spec["steps"][1].pop("name"))
    with pytest.raises(ValueError, match=r"pipe\.yaml: step #2 \(notebook .*step\.ipynb\) has no name"):
        load_pipeline(path)


def test_folds_given_as_a_string_is_refused_naming_the_step(tmp_path):
    path = _rewrite(_pipeline(tmp_path), lambda spec: spec["steps"][1].update(folds="3"))
    with pytest.raises(
        ValueError, match=r"pipe\.yaml: step 'b': folds must be a whole number ≥ 1.*'3' \(a string\)"
    ):
        load_pipeline(path)


@pytest.mark.parametrize("folds", [-1, 0])
def test_folds_below_one_are_refused_instead_of_dropping_the_step(tmp_path, folds):
    # Before: -1 expanded to no step at all and `c` lost its dependency; 0 ran `b` once, unfolded.
    path = _rewrite(_pipeline(tmp_path), lambda spec: spec["steps"][1].update(folds=folds))
    with pytest.raises(
        ValueError, match=rf"pipe\.yaml: step 'b': folds must be a whole number ≥ 1 .*, got {folds};"
    ):
        load_pipeline(path)


def test_steps_given_as_a_mapping_is_refused_with_the_list_form(tmp_path):
    def as_mapping(spec):
        spec["steps"] = {s.pop("name"): s for s in spec["steps"]}

    path = _rewrite(_pipeline(tmp_path), as_mapping)
    with pytest.raises(
        ValueError, match=r"pipe\.yaml: steps must be a list, one `- name: …` entry.*keys a, b, c"
    ):
        load_pipeline(path)


def test_a_set_value_of_the_wrong_type_is_caught_when_the_file_is_loaded(tmp_path):
    path = _rewrite(_pipeline(tmp_path), lambda spec: spec["steps"][0]["set"].update(value="five"))
    with pytest.raises(ValueError, match=r"pipe\.yaml: step 'a': set: parameter value='five' should be int"):
        load_pipeline(path)


def test_a_set_name_the_notebook_lacks_names_the_file_the_step_and_the_valid_parameters(tmp_path):
    path = _rewrite(_pipeline(tmp_path), lambda spec: spec["steps"][2].update(set={"valeu": 3}))
    with pytest.raises(
        ValueError,
        match=r"pipe\.yaml: step 'c': set: unknown parameter\(s\) valeu; valid parameters: fail, fold, n_folds, out_dir, value",
    ):
        load_pipeline(path)


def test_a_params_file_value_of_the_wrong_type_is_caught_when_the_file_is_loaded(tmp_path):
    (tmp_path / "a.yaml").write_text("value: 2.5\n")
    path = _rewrite(
        _pipeline(tmp_path), lambda spec: spec["steps"][0].update(params=str(tmp_path / "a.yaml"))
    )
    with pytest.raises(
        ValueError, match=r"pipe\.yaml: step 'a': params .*a\.yaml: parameter value=2.5 should be int"
    ):
        load_pipeline(path)


def test_a_parameter_line_papermill_cannot_parse_is_named_at_load_time(tmp_path):
    # papermill's line parser drops `limit` (the '=' of '>=' in its comment): it would neither list
    # nor inject it, and a params file setting it would read as "unknown parameter".
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = new_code_cell('out_dir: str = "x"\nlimit: int = 3  # must be >= 0')
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    nbformat.write(nb, tmp_path / "nb.ipynb")
    (tmp_path / "p.yaml").write_text(
        yaml.safe_dump({"steps": [{"name": "s", "notebook": str(tmp_path / "nb.ipynb")}]})
    )
    with pytest.raises(
        ValueError, match=r"p\.yaml: step 's': notebook .*nb\.ipynb: papermill cannot parse .* limit"
    ):
        load_pipeline(tmp_path / "p.yaml")
