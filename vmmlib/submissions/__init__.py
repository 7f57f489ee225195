"""Submission files, one module per competition format: write, read, validate, evaluate.

Every module offers the same functions, and imports no torch, so `vmm validate` answers at once:

    write(path, ...) -> Path                       the file in the competition's exact format
    read(path)                                     its content; InvalidSubmissionError if invalid
    validate(path, required_ids=None) -> list[str] problems, one line each (empty: valid)
    evaluate(pred, truth) -> dict[str, float]      validates first, then the official metric
    required_ids(*, truth=None, data_dir=None, split=None) -> list | None

`required_ids` gives the ids every valid file must hold (None: no source given; `validate` then
checks the format alone). A new format registers itself with one line in `FORMATS`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from vmmlib.io.safe import InputError

FORMATS = {
    "qqbrowser": "vmmlib.submissions.qqbrowser",
    "yt8m": "vmmlib.submissions.yt8m",
    "wbdc": "vmmlib.submissions.wbdc",
    "muge": "vmmlib.submissions.muge",
    "avfusion": "vmmlib.submissions.avfusion",
}


class InvalidSubmissionError(InputError):
    """A submission the competition would refuse; `problems` lists why, one line each.

    An `InputError` (so `vmm` and the hostile-input test treat it as one) whose message keeps the
    submission's own wording: "<path> is not a valid submission: <first problem> (and N more ...)".
    """

    def __init__(self, path, problems: list[str]):
        self.problems = list(problems)
        more = f" (and {len(self.problems) - 1} more problem(s))" if len(self.problems) > 1 else ""
        super().__init__(path, f"not a valid submission: {self.problems[0]}{more}")
        self.path = str(path)
        ValueError.__init__(self, f"{self.path} is not a valid submission: {self.problems[0]}{more}")

    def __reduce__(self):
        return (type(self), (self.path, self.problems))


def list_formats() -> list[str]:
    """The tasks with a submission format."""
    return sorted(FORMATS)


def get_format(task: str) -> ModuleType:
    """The submission module of `task`; an unknown task raises ValueError listing the valid ones."""
    if task not in FORMATS:
        raise ValueError(f"unknown task {task!r}; valid choices: {', '.join(list_formats())}")
    return importlib.import_module(FORMATS[task])
