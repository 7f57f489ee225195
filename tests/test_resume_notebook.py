"""A killed notebook resumes: `notebooks/20_finetune.ipynb` run through papermill with periodic
checkpoints, its kernel killed for real (SIGKILL to the whole process group) once a checkpoint is on
disk, then rerun with the same parameters, ends with exactly the weights of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml
from safetensors.torch import load_file

from vmmlib.train.checkpoint import find_checkpoint

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "20_finetune.ipynb"
PARAMS = ROOT / "params" / "qqbrowser" / "sample_mixnextvlad_finetune.yaml"
STEPS = 60


def _params(data_dir: Path, out_dir: Path) -> dict:
    params = yaml.safe_load(PARAMS.read_text())
    params.update(
        data_dir=str(data_dir), make_sample=False, steps=STEPS, eval_every=30, batch_size=8, warmup_steps=5,
        save_every=2, save_minutes=0.0, fold=1, out_dir=str(out_dir / "finetune-fold{fold}"),
    )  # fmt: skip
    return params


def _papermill(params: dict, tmp_path: Path, name: str) -> subprocess.Popen:
    """Start papermill (and so its kernel) in a process group of its own."""
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(params))
    cmd = [sys.executable, "-m", "papermill", str(NOTEBOOK), str(tmp_path / f"{name}.ipynb")]
    cmd += ["-f", str(tmp_path / f"{name}.yaml"), "--cwd", str(ROOT), "-k", "python3", "--no-progress-bar"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(proc: subprocess.Popen, timeout: float = 300) -> None:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL papermill and every process under it: the kernel runs in a session of its own (and
    would otherwise train on for up to a second, until it notices its parent is gone)."""
    tree = psutil.Process(proc.pid).children(recursive=True)
    for p in tree:  # the kernel first: it is the one writing checkpoints
        p.kill()
    os.killpg(proc.pid, signal.SIGKILL)
    psutil.wait_procs(tree, timeout=30)
    proc.wait()


def _kill_at_checkpoint(
    proc: subprocess.Popen, state_json: Path, min_step: int, timeout: float = 300
) -> None:
    """Kill the run once `state_json` says step >= min_step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it could be killed:\n" + proc.stdout.read()[-3000:]
        try:
            step = json.loads(state_json.read_text())["step"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):  # not there yet, or mid-rename
            step = 0
        if step >= min_step:
            return _kill_tree(proc)
        time.sleep(0.02)
    _kill_tree(proc)
    raise TimeoutError(f"{state_json} never reached step {min_step}")


def _fit_cell_text(executed: Path) -> str:
    """Every text output of the executed notebook's `fit(` cell (the progress bar shows where it started)."""
    nb = json.loads(executed.read_text())
    cell = next(c for c in nb["cells"] if c["cell_type"] == "code" and "fit(" in "".join(c["source"]))
    parts = []
    for out in cell.get("outputs", []):
        parts.append("".join(out.get("text", "")))
        parts.append("".join(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


@pytest.mark.slow  # three papermill runs (~10 s of kernel start-up each); CI runs it
def test_a_killed_finetune_notebook_resumes_from_its_last_checkpoint_and_ends_bit_equal(qq_sample, tmp_path):
    reference = _params(qq_sample, tmp_path / "a")
    _finish(_papermill(reference, tmp_path, "uninterrupted"))
    # The notebook reports a fine-tune that does not improve (a warning); on the sample recipe it must.
    metrics = json.loads((tmp_path / "a" / "finetune-fold1" / "metrics.json").read_text())
    assert metrics["spearman"] > metrics["spearman_before"] and metrics["warnings"] == [], metrics

    params = _params(qq_sample, tmp_path / "b")
    run = tmp_path / "b" / "finetune-fold1"  # {fold} filled in by start_run
    _kill_at_checkpoint(_papermill(params, tmp_path, "killed"), run / "checkpoints/last/state.json", 6)
    last = find_checkpoint(run / "checkpoints/last", marker="state.json")  # .prev if killed mid-swap
    killed_at = json.loads((last / "state.json").read_text())["step"]
    assert 6 <= killed_at < STEPS and not (run / "model.safetensors").exists()
    _finish(_papermill(params, tmp_path, "rerun"))

    ref = tmp_path / "a" / "finetune-fold1"
    for name in (
        "model.safetensors",
        "checkpoints/last/model.safetensors",
        "checkpoints/best/model.safetensors",
    ):
        a, b = load_file(ref / name), load_file(run / name)
        assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a), name
    assert (ref / "history.csv").read_text() == (run / "history.csv").read_text()
    # It resumed rather than retrained: the rerun's progress bar starts at the checkpoint's step.
    text = _fit_cell_text(tmp_path / "rerun.ipynb")
    assert f"{killed_at}/{STEPS}" in text and f" 0/{STEPS}" not in text, text[-2000:]
