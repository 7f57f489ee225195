"""Hostile-input entries of vmmlib.submissions (validators, scorers with --truth), the metrics' truth
readers and the feature jsonl reader.

A validator reports problems instead of raising: its entry turns a non-empty problem list into an
InputError naming the submission (what `vmm validate` prints, exit status 1), so a crash, a problem
that names no file, or a memory blow-up still fails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.hostile.registry import register
from vmmlib.io.safe import InputError


def _validated(module: str):
    def call(path: Path) -> None:
        from vmmlib.submissions import get_format

        problems = get_format(module).validate(path)
        if problems:
            raise InputError(path, "; ".join(problems)[:2000])

    return call


def _qq_result(folder: Path) -> Path:
    from vmmlib.submissions import qqbrowser

    rng = np.random.default_rng(0)
    return qqbrowser.write(folder / "result.zip", ["v1", "v2", "v3"], rng.normal(size=(3, 8)))


register(
    name="validate.qqbrowser",
    module="vmmlib.submissions.qqbrowser",
    make=_qq_result,
    targets={"": "zip", "!result.json": "json"},
    call=_validated("qqbrowser"),
    handled={"zip_slip": "only result.json is read, as the official evaluator does; no member is extracted"},
)
