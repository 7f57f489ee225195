"""Figures before/after a refactor (issue 20): every task's shortened sample pipeline (the CI tests'
settings, `tests/tasks/test_*_pipeline.py`) run in the repository at the working directory, its
index metrics dumped to JSON; `--compare BEFORE AFTER` lists the values that differ (timings left out).

    git archive <before> | tar -x -C /tmp/before
    (cd /tmp/before && PYTHONPATH=$PWD python $REPO/benchmarks/sample_figures.py /tmp/before.json)
    PYTHONPATH=$PWD python benchmarks/sample_figures.py /tmp/after.json [TASK ...]
    python benchmarks/sample_figures.py --compare /tmp/before.json /tmp/after.json
"""

import importlib.util
import json
import math
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path.cwd()
sys.path.insert(0, str(ROOT))
from vmmlib.app.pipeline import run_pipeline  # noqa: E402


def pipeline_test_module(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tests/tasks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(name, short, tmp, *, sample=None, folds=None, n_folds=False):
    spec = yaml.safe_load((ROOT / "params/pipelines" / f"{name}.yaml").read_text())
    spec["run_dir"], spec["data"]["dir"] = str(tmp / "run"), str(tmp / "data")
    if sample is not None:
        spec["data"]["sample"] = sample
    for step in spec["steps"]:
        step["notebook"], step["params"] = str(ROOT / step["notebook"]), str(ROOT / step["params"])
        step["set"] = {**step.get("set", {}), **short.get(step["name"], {})}
        if folds and "folds" in step:
            step["folds"] = folds
            if n_folds:
                step["set"]["n_folds"] = folds
    (tmp / "pipe.yaml").write_text(yaml.safe_dump(spec))
    results = run_pipeline(tmp / "pipe.yaml", progress=False)
    bad = [r["error"] for r in results if r["status"] != "ok"]
    steps = json.loads((tmp / "run/index.json").read_text())["steps"]
    return {"errors": bad, **{s["name"]: s["metrics"] for s in steps}}


CASES = {
    "avfusion": ("test_avfusion_pipeline", {}),
    "muge": ("test_muge_pipeline", {"sample": True}),
    "wbdc": ("test_wbdc_pipeline", {"sample": True, "folds": 2, "n_folds": True}),
    "yt8m": ("test_yt8m_pipeline", {"sample": True, "folds": 2}),
}


def main():
    out = {}
    tasks = sys.argv[2:] or [*CASES, "qqbrowser"]
    for task in tasks:
        with tempfile.TemporaryDirectory() as d:
            if task == "qqbrowser":
                short = {
                    "pretrain-mix": {"steps": 30, "eval_every": 15},
                    "pretrain-uniter": {"steps": 30, "eval_every": 15},
                    "finetune-mix": {"steps": 40, "eval_every": 20},
                    "finetune-uniter": {"steps": 40, "eval_every": 20},
                    "ensemble": {"search_iter": 8},
                }
                out[task] = run("qqbrowser_sample", short, Path(d), folds=2)
            else:
                mod_name, kw = CASES[task]
                mod = pipeline_test_module(mod_name)
                if kw.pop("sample", False):
                    kw["sample"] = mod.SAMPLE
                out[task] = run(f"{task}_sample", mod.SHORT, Path(d), **kw)
        print(task, "done", out[task]["errors"], flush=True)
        Path(sys.argv[1]).write_text(json.dumps(out, indent=1, sort_keys=True, default=str))
    Path(sys.argv[1]).write_text(json.dumps(out, indent=1, sort_keys=True, default=str))


def compare(before: str, after: str) -> None:
    a, b = json.load(open(before)), json.load(open(after))
    SKIP = ("_per_s", "seconds", "time", "duration")
    n, diffs = 0, []
    for task in sorted(set(a) | set(b)):
        for step in sorted(set(a.get(task, {})) | set(b.get(task, {}))):
            ma, mb = a.get(task, {}).get(step), b.get(task, {}).get(step)
            if step == "errors":
                if ma or mb:
                    diffs.append((task, step, ma, mb))
                continue
            if ma is None or mb is None:
                diffs.append((task, step, "missing", ma is None, mb is None))
                continue
            for k in sorted(set(ma) | set(mb)):
                if any(s in k for s in SKIP):
                    continue
                va, vb = ma.get(k), mb.get(k)
                n += 1
                if isinstance(va, float) and isinstance(vb, float):
                    if not (va == vb or (math.isnan(va) and math.isnan(vb))):
                        diffs.append((task, step, k, va, vb))
                elif va != vb:
                    diffs.append((task, step, k, va, vb))
    print(n, "values compared;", len(diffs), "differ")
    for d in diffs:
        print(d)


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        compare(sys.argv[2], sys.argv[3])
    else:
        main()
