"""Readers of the competitions' formats, sample-data generators, folds, frame sampling, tokenisation."""

from __future__ import annotations

import importlib
from pathlib import Path

# task -> "module:function" of its sample writer (the default `make_sample` of a task)
SAMPLE_WRITERS = {
    "qqbrowser": "vmmlib.data.qqbrowser.sample:write_qqbrowser_sample",
    "yt8m": "vmmlib.data.yt8m.sample:write_yt8m_sample",
    "wbdc": "vmmlib.data.wbdc.sample:write_wbdc_sample",
    "muge": "vmmlib.data.muge.sample:write_muge_sample",
    "avfusion": "vmmlib.data.avfusion.sample:write_avfusion_sample",
}


def write_sample(task: str, out_dir: str | Path, **options) -> Path:
    """Write `task`'s deterministic sample data in its real layout under `out_dir`; an option the
    writer does not take fails with the valid ones."""
    from vmmlib.options import call_with_options, check_choice

    check_choice("sample data of task", task, SAMPLE_WRITERS)
    module, name = SAMPLE_WRITERS[task].split(":")
    writer = getattr(importlib.import_module(module), name)
    return call_with_options(writer, out_dir, options=options, what="sample option")
