from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_notebook

from vmmlib.app.cli import main
from vmmlib.app.pipeline import load_pipeline
from vmmlib.app.pipeline_settings import parse_settings


def _pipeline(tmp_path: Path, *, dry_param: bool = True) -> Path:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    lines = ['data_dir: str = ""', 'text_model_dir: str = ""', 'out_dir: str = "x"']
    params = new_code_cell("\n".join(lines + (["dry_run: bool = False"] if dry_param else [])))
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params]
    nbformat.write(nb, tmp_path / "nb.ipynb")
    spec = {
        "run_dir": str(tmp_path / "run"),
        "settings": {"data_dir": "data/wbdc", "text_model_dir": "models/macbert"},
        "steps": [{"name": "a", "notebook": str(tmp_path / "nb.ipynb"),
                   "set": {"data_dir": "{data_dir}", "text_model_dir": "{text_model_dir}/x"}}],
    }  # fmt: skip
    path = tmp_path / "pipe.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_settings_fill_step_placeholders_and_set_overrides_them(tmp_path):
    path = _pipeline(tmp_path)
    step = load_pipeline(path).steps[0]
    assert step.params["text_model_dir"] == "models/macbert/x" and step.params["data_dir"].endswith(
        "data/wbdc"
    )
    step = load_pipeline(path, settings={"text_model_dir": "/m", "data_dir": "/d"}).steps[0]
    assert step.params["text_model_dir"] == "/m/x" and step.params["data_dir"] == "/d"


def test_unknown_setting_is_refused_naming_the_valid_ones(tmp_path):
    with pytest.raises(
        ValueError, match="unknown setting.*textmodel_dir; valid settings: data_dir, run_dir, text_model_dir"
    ):
        load_pipeline(_pipeline(tmp_path), settings={"textmodel_dir": "/m"})


def test_dry_run_pipeline_writes_to_its_own_run_folder_with_dry_run_set(tmp_path):
    pipe = load_pipeline(_pipeline(tmp_path), dry_run=True)
    assert pipe.run_dir == tmp_path / "run-dry-run"
    assert pipe.steps[0].params["dry_run"] is True
    assert pipe.steps[0].out_dir == str(tmp_path / "run-dry-run" / "a")
    with pytest.raises(ValueError, match="no dry_run parameter"):
        load_pipeline(_pipeline(tmp_path, dry_param=False), dry_run=True)


def test_vmm_run_refuses_a_bad_set_before_running(tmp_path, capsys):
    assert main(["run", str(_pipeline(tmp_path)), "--set", "bogus=1"]) == 2
    assert "valid settings: data_dir, run_dir, text_model_dir" in capsys.readouterr().err
    with pytest.raises(ValueError, match="name=value"):
        parse_settings(["novalue"])
    assert parse_settings(["a=b=c"]) == {"a": "b=c"}


@pytest.mark.parametrize("task", ["qqbrowser", "yt8m", "wbdc", "muge", "avfusion"])
def test_every_path_of_a_full_pipeline_follows_its_settings(task):
    # a recipe's own default ("data/avfusion/retrieval/test.jsonl") left in a step reads the wrong data
    root = Path(__file__).resolve().parents[1]
    path = root / "params" / "pipelines" / f"{task}_full.yaml"
    names = yaml.safe_load(path.read_text())["settings"]
    settings = {name: f"/elsewhere/{name}" for name in names}
    pipe = load_pipeline(path, settings=settings)

    def leaks(value, where):
        if isinstance(value, dict):
            return [x for k, v in value.items() for x in leaks(v, f"{where}.{k}")]
        if isinstance(value, list):
            return [x for i, v in enumerate(value) for x in leaks(v, f"{where}[{i}]")]
        default = isinstance(value, str) and value.split("/")[0] in ("data", "runs", "models", "pretrained")
        return [f"{where} = {value}"] if default else []

    found = [x for step in pipe.steps for k, v in step.params.items() for x in leaks(v, f"{step.name}: {k}")]
    assert not found, found
