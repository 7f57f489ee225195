"""Running a shipped sample pipeline, shortened, as the CI tests of each task do."""

import json
from pathlib import Path

import pytest
import yaml

from vmmlib.app.pipeline import run_pipeline

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_short_pipeline(tmp_path):
    """run(name, short, *, sample=None, folds=None, n_folds=False) -> {step: metrics} of the index.

    Runs `params/pipelines/<name>.yaml` under tmp_path with each step's `set` extended by
    `short[step]` (fewer steps; the step names must be exactly `short`'s), the sample options
    replaced by `sample`, and fold-expanded steps cut to `folds` (also passed as `n_folds` when
    asked); asserts every step ended ok.
    """

    def run(name, short, *, sample=None, folds=None, n_folds=False):
        spec = yaml.safe_load((ROOT / "params/pipelines" / f"{name}.yaml").read_text())
        spec["run_dir"] = str(tmp_path / "run")
        spec["data"]["dir"] = str(tmp_path / "data")
        if sample is not None:
            spec["data"]["sample"] = sample
        assert [s["name"] for s in spec["steps"]] == list(short)
        for step in spec["steps"]:
            step["notebook"] = str(ROOT / step["notebook"])
            step["params"] = str(ROOT / step["params"])
            step["set"] = {**step.get("set", {}), **short[step["name"]]}
            if folds and "folds" in step:
                step["folds"] = folds
                if n_folds:
                    step["set"]["n_folds"] = folds
        path = tmp_path / "pipe.yaml"
        path.write_text(yaml.safe_dump(spec))
        results = run_pipeline(path, progress=False)
        assert {r["name"]: r["status"] for r in results} == {r["name"]: "ok" for r in results}, [
            r["error"] for r in results if r["error"]
        ]
        steps = json.loads((tmp_path / "run/index.json").read_text())["steps"]
        return {s["name"]: s["metrics"] for s in steps}

    return run
