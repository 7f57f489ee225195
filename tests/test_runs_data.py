"""A rerun after the data at the same path changed refuses instead of reporting the old run (16.2):
the run record fingerprints the files under the data parameters (names, sizes, mtimes, a hash of
each file's first and last 64 KiB)."""

import json
import os

import pytest

from vmmlib.runs import data_fingerprint, start_run
from vmmlib.tasks import get_task


def _fitted(folder):
    """What `fit` leaves in a run folder."""
    (folder / "checkpoints" / "last").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")


def _params(tmp_path, **more):
    return {"task": "qqbrowser", "data_dir": str(tmp_path / "data"), "lr": 1e-3, "restart": False, **more}


def test_a_rerun_after_the_sample_data_was_regenerated_with_another_seed_is_refused(tmp_path):
    task = get_task("qqbrowser")
    task.make_sample(tmp_path / "data", videos=24, pairs=12, seed=0)
    params = _params(tmp_path)
    run = start_run(tmp_path / "run", params)
    _fitted(run)
    assert start_run(tmp_path / "run", params) == run  # same data: the run resumes
    task.make_sample(tmp_path / "data", videos=24, pairs=12, seed=1, overwrite=True)
    with pytest.raises(
        ValueError,
        match=r"from other data: data in .*data \(data_dir\) changed: files .*pairwise/label\.tsv, .*\. Pass",
    ) as e:
        start_run(tmp_path / "run", params)
    assert "Pass restart=True" in str(e.value)
    assert (run / "model.safetensors").exists()
    assert start_run(tmp_path / "run", {**params, "restart": True}) == run  # how to start afresh
    assert not (run / "model.safetensors").exists()


def test_a_file_changed_in_its_middle_with_size_kept_is_caught_by_its_mtime(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.bin").write_bytes(bytes(300_000))
    (data / "b.txt").write_text("b")
    params = _params(tmp_path)
    _fitted(start_run(tmp_path / "run", params))
    with open(data / "a.bin", "r+b") as f:  # past both hashed blocks
        f.seek(150_000)
        f.write(b"x")
    (data / "c.txt").write_text("new")
    (data / "b.txt").unlink()
    with pytest.raises(
        ValueError,
        match=r"changed: modified \(same size and end blocks, new mtime\) a\.bin; added c\.txt; removed b\.txt",
    ):
        start_run(tmp_path / "run", params)


def test_a_replaced_file_with_size_and_mtime_kept_is_caught_by_its_hash(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.bin").write_bytes(b"1" * 1000)
    params = _params(tmp_path)
    _fitted(start_run(tmp_path / "run", params))
    st = (data / "a.bin").stat()
    (data / "a.bin").write_bytes(b"2" * 1000)
    os.utime(data / "a.bin", ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(ValueError, match=r"files a\.bin\."):
        start_run(tmp_path / "run", params)


def test_the_fingerprint_skips_hidden_caches_and_records_every_data_parameter(tmp_path):
    data = tmp_path / "data"
    (data / ".vmm_cache").mkdir(parents=True)
    (data / ".vmm_cache" / "x.npy").write_bytes(b"cache")
    (data / "sub").mkdir()
    (data / "sub" / "f.tsv").write_text("1\t2\n")
    assert list(data_fingerprint(data)) == ["sub/f.tsv"]
    run = start_run(
        tmp_path / "run", _params(tmp_path, pretrain_dir="", truth_path=str(data / "sub" / "f.tsv"))
    )
    record = json.loads((run / "run.json").read_text())
    assert set(record["data"]) == {"data_dir", "truth_path"} and len(record["data_fingerprint"]) == 16
    (data / ".vmm_cache" / "y.npy").write_bytes(b"written by a reader during the run")
    _fitted(run)
    assert start_run(
        tmp_path / "run", _params(tmp_path, pretrain_dir="", truth_path=str(data / "sub" / "f.tsv"))
    )


def test_vmm_run_reruns_a_finished_step_when_its_data_changed(tmp_path, monkeypatch):
    import shutil

    import nbformat
    import papermill
    import yaml
    from nbformat.v4 import new_code_cell, new_notebook

    from vmmlib.app.pipeline import load_pipeline, run_step

    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = new_code_cell('data_dir: str = "x"\nout_dir: str = "x"')
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    nbformat.write(nb, tmp_path / "nb.ipynb")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("1")
    spec = {
        "run_dir": str(tmp_path / "run"),
        "steps": [{"name": "s", "notebook": str(tmp_path / "nb.ipynb")}],
    }
    spec["steps"][0]["set"] = {"data_dir": str(tmp_path / "data")}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(spec))
    # papermill stands in: the test is about the runner's decision, not about running a kernel
    monkeypatch.setattr(papermill, "execute_notebook", lambda src, dst, **kw: shutil.copy(src, dst))
    step = load_pipeline(tmp_path / "p.yaml").steps[0]
    assert run_step(step)["status"] == "ok"
    assert run_step(step)["status"] == "cached"
    (tmp_path / "data" / "a.txt").write_text("2")
    assert run_step(step)["status"] == "ok"
    assert run_step(step)["status"] == "cached"
