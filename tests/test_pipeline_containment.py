"""`vmm run` writes and deletes only inside its run folder, and a bad pipeline file is one clear
InputError naming the file and the step or key (issue 16.1, 16.5)."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_notebook

from vmmlib.app.cli import main
from vmmlib.app.pipeline import Step, load_pipeline, run_step
from vmmlib.io.safe import InputError


def _notebook(path: Path) -> Path:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = new_code_cell('value: int = 1\nout_dir: str = "x"')
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, new_code_cell("print(value)")]
    nbformat.write(nb, path)
    return path


def _write(tmp_path: Path, spec: dict | str) -> Path:
    path = tmp_path / "pipe.yaml"
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
    return path


def _spec(tmp_path: Path, name: str = "a", **step) -> dict:
    nb = _notebook(tmp_path / "step.ipynb")
    return {"run_dir": str(tmp_path / "run"), "steps": [{"name": name, "notebook": str(nb), **step}]}


@pytest.fixture
def canary(tmp_path):
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "canary.txt").write_text("keep me")
    return folder


@pytest.mark.parametrize("name", ["..", ".", "a/b", "../../x", "line\nbreak", "", "a b", 5])
def test_a_step_name_that_is_not_a_plain_name_is_refused_at_load_naming_file_and_step(tmp_path, name):
    path = _write(tmp_path, _spec(tmp_path, name))
    with pytest.raises(InputError) as caught:
        load_pipeline(path)
    assert str(path) in str(caught.value) and "step #1" in str(caught.value)


def test_an_absolute_step_name_cannot_wipe_a_folder_outside_the_run(tmp_path, canary, capsys):
    path = _write(tmp_path, _spec(tmp_path, str(canary)))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: step #1: name ") and err.count("\n") == 1
    assert (canary / "canary.txt").read_text() == "keep me"
    assert sorted(p.name for p in canary.iterdir()) == ["canary.txt"]  # no index written beside it


def test_vmm_run_prints_one_error_line_and_exits_2_for_a_bad_step_name(tmp_path, canary):
    path = _write(tmp_path, _spec(tmp_path, str(canary)))
    done = subprocess.run(
        [sys.executable, "-m", "vmmlib.app.cli", "run", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
    assert str(path) in done.stderr and "not a plain name" in done.stderr
    assert (canary / "canary.txt").exists()


def test_force_never_deletes_a_step_folder_outside_the_run_folder(tmp_path, canary):
    # A Step built by hand (or by an older loader) whose folder climbs out: `..` of the run folder.
    run = tmp_path / "run"
    run.mkdir()
    nb = _notebook(tmp_path / "step.ipynb")
    for out_dir in (run / "..", canary, run):
        step = Step("x", str(nb), str(out_dir), {"value": 1, "out_dir": str(out_dir)}, run_dir=str(run))
        result = run_step(step, force=True)
        assert result["status"] == "failed" and "not run" in result["error"]
    assert (canary / "canary.txt").exists() and run.is_dir()


def test_a_step_folder_that_is_a_link_out_of_the_run_folder_is_refused(tmp_path, canary):
    path = _write(tmp_path, _spec(tmp_path, "a"))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "a").symlink_to(canary)
    with pytest.raises(InputError, match="leads outside"):
        load_pipeline(path)
    pipe_step = Step(
        "a", str(tmp_path / "step.ipynb"), str(tmp_path / "run" / "a"), {}, run_dir=str(tmp_path / "run")
    )
    assert run_step(pipe_step, force=True)["status"] == "failed"
    assert (canary / "canary.txt").exists()


@pytest.mark.parametrize(
    "spec, where",
    [
        ("steps: [a: 1\n", "line"),  # YAML syntax error
        ({"run_dir": 5, "steps": [{"name": "a", "notebook": "x"}]}, "key 'run_dir'"),
        ({"workers": "2", "steps": [{"name": "a", "notebook": "x"}]}, "key 'workers'"),
        ({"steps": ["just a string"]}, "step #1"),
        ({"steps": [{"name": "a", "notebook": 3}]}, "step 'a'"),
        ({"steps": [{"name": "a", "notebook": "x", "set": {1: 2}}]}, "step 'a'"),
        ({"steps": [{"name": "a", "notebook": "x", "resources": {"GPU": "one"}}]}, "step 'a'"),
        ({"steps": [{"name": "a", "notebook": "x", "params": ["p.yaml"]}]}, "step 'a'"),
        ({"data": {"task": "qqbrowser", "dir": 7}, "steps": [{"name": "a", "notebook": "x"}]}, "key 'data'"),
        ([1, 2], "mapping"),
    ],
)
def test_a_malformed_pipeline_file_is_an_input_error_naming_file_and_key(tmp_path, spec, where):
    path = _write(tmp_path, spec)
    with pytest.raises(InputError) as caught:
        load_pipeline(path)
    assert str(path) in str(caught.value) and where in str(caught.value)


def test_a_set_template_with_a_format_spec_is_refused_not_expanded(tmp_path):
    path = _write(tmp_path, _spec(tmp_path, "a", set={"out_dir": "{run_dir:>999999999}"}))
    with pytest.raises(InputError, match=r"step 'a': set: unknown placeholder \{run_dir:>999999999\}"):
        load_pipeline(path)


def test_a_truncated_status_file_is_read_as_no_result(tmp_path):
    from vmmlib.app.pipeline import read_results

    pipe = load_pipeline(_write(tmp_path, _spec(tmp_path, "a")))
    (tmp_path / "run" / "a").mkdir(parents=True)
    (tmp_path / "run" / "a" / "status.json").write_text('{"status": "ok", "finger')
    assert read_results(pipe)[0]["status"] == "pending"
    assert json.loads(json.dumps(read_results(pipe)))  # still JSON-ready for the index
