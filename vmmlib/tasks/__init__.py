"""Tasks: one module per competition, wiring its reader, sample generator, explore summary,
models, objectives, metric and submission. Notebooks take `task` as a parameter and call the
task's pieces; they never branch on the task name."""

from __future__ import annotations

import importlib
from types import ModuleType

from vmmlib.runs import check_choice

_TASK_MODULES = {
    "qqbrowser": "vmmlib.tasks.qqbrowser",
    "yt8m": "vmmlib.tasks.yt8m",
}


def list_tasks() -> list[str]:
    return sorted(_TASK_MODULES)


def get_task(name: str) -> ModuleType:
    """The task module for `name`; an unknown name raises ValueError listing the valid tasks."""
    check_choice("task", name, _TASK_MODULES)
    return importlib.import_module(_TASK_MODULES[name])
