"""Help keeps up with the code (issue 19.4): the README's task table, `vmm --help` and every notebook's
intro cover all five tasks, and the README says how to list a notebook's parameters."""

import json
from pathlib import Path

from vmmlib.app.cli import build_parser
from vmmlib.tasks import get_task, list_tasks

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_table_has_a_row_per_task_with_its_sample_pipeline_and_metric():
    readme = (ROOT / "README.md").read_text()
    assert "papermill --help-notebook notebooks/20_finetune.ipynb" in readme
    for task in list_tasks():
        (row,) = [line for line in readme.splitlines() if line.startswith(f"| `{task}` |")]
        assert f"`params/pipelines/{task}_sample.yaml`" in row and f"`{get_task(task).METRIC}`" in row, row
        assert (ROOT / "params/pipelines" / f"{task}_sample.yaml").is_file() and f"`params/{task}/`" in row


def test_vmm_help_and_every_notebook_intro_name_all_five_tasks():
    text = build_parser().format_help()
    assert all(task in text for task in list_tasks()) and "--help-notebook" in text
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        intro = "".join(json.loads(path.read_text())["cells"][0]["source"])
        missing = [task for task in list_tasks() if f"`{task}`" not in intro]
        assert not missing and f"papermill --help-notebook notebooks/{path.name}" in intro, (
            path.name,
            missing,
        )
