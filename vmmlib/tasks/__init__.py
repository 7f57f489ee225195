"""Tasks: one module per competition, wiring its reader, sample generator, explore summary, models,
objectives, prediction, metric and submission behind one written contract (`contract.Task`).
Notebooks take `task` as a parameter and call the task's pieces; they never branch on its name."""

from __future__ import annotations

import importlib

from vmmlib.options import check_choice
from vmmlib.tasks.contract import Task, bind

_TASK_MODULES = {
    "qqbrowser": "vmmlib.tasks.qqbrowser",
    "yt8m": "vmmlib.tasks.yt8m",
    "muge": "vmmlib.tasks.muge",
    "wbdc": "vmmlib.tasks.wbdc",
    "avfusion": "vmmlib.tasks.avfusion",
}


def list_tasks() -> list[str]:
    return sorted(_TASK_MODULES)


def get_task(name: str) -> Task:
    """The task `name` (its module, checked against the contract, with the default hooks filled in);
    an unknown name raises ValueError listing the valid tasks."""
    check_choice("task", name, _TASK_MODULES)
    task = bind(importlib.import_module(_TASK_MODULES[name]))
    if task.NAME != name:
        raise TypeError(f"{_TASK_MODULES[name]} names itself {task.NAME!r}, not {name!r}")
    return task
