"""Every task module provides everything the notebooks call on it (`T.<name>`), read from the
notebooks themselves, so a new notebook call cannot silently miss a task."""

import json
import re
from pathlib import Path

import pytest

from vmmlib.tasks import get_task, list_tasks

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def _task_attributes() -> set[str]:
    names = set()
    for path in NOTEBOOKS:
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                names |= set(re.findall(r"(?<![\w.)])T\.([A-Za-z_]\w*)", "".join(cell["source"])))
    return names


def test_the_notebooks_call_task_functions():
    assert {"load", "build_model", "infer", "oof_score", "oof_breakdown", "METRIC"} <= _task_attributes()


@pytest.mark.parametrize("task", list_tasks())
def test_the_task_has_every_attribute_the_notebooks_use(task):
    module = get_task(task)
    assert sorted(n for n in _task_attributes() if not hasattr(module, n)) == []
