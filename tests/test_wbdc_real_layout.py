"""`-p task wbdc` fine-tunes on a WBDC folder written here from the competition's published layout
(SPEC §1.2), not by `vmm sample`: annotation JSON arrays with string ids, 4-character category ids and
OCR lists, float16 `[frames, 768]` members in `zip_feats/{split}.zip`, and no `vocab.txt` (the real
release has none) — the vocabulary is given the documented way, `data_options {"vocab_path": …}`,
here cn-clip's real 21,128-token Chinese WordPiece vocabulary."""

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from vmmlib.io.wbdc_categories import CATEGORY_IDS

ROOT = Path(__file__).resolve().parents[1]
cn_clip = pytest.importorskip("cn_clip")
VOCAB = Path(cn_clip.__file__).parent / "clip" / "vocab.txt"
WORDS = ["美食", "旅行", "音乐", "游戏", "汽车", "体育", "电影", "宠物"]


def _write_split(root: Path, split: str, n: int, rng: np.random.Generator, labeled: bool) -> None:
    entries, members = [], {}
    for i in range(n):
        k = i % len(WORDS)  # the class shows in the title and in the frames
        vid = str(13477278056527828998 - 7919 * i - 100003 * (split != "labeled"))
        entry = {"id": vid, "title": f"{WORDS[k]}视频第{i}期", "asr": "大家好今天", "ocr": [
            {"time": 0, "text": WORDS[k]}, {"time": 3, "text": "关注"}]}  # fmt: skip
        if labeled:
            entry["category_id"] = CATEGORY_IDS[17 * k]
        entries.append(entry)
        frames = rng.normal(size=(int(rng.integers(3, 40)), 768)) * 0.1
        frames[:, k] += 1.0
        buf = io.BytesIO()
        np.save(buf, frames.astype(np.float16))
        members[f"{vid}.npy"] = buf.getvalue()
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"{split}.json").write_text(json.dumps(entries, ensure_ascii=False))
    (root / "zip_feats").mkdir(exist_ok=True)
    with zipfile.ZipFile(root / "zip_feats" / f"{split}.zip", "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def test_task_wbdc_fine_tunes_on_the_real_layout_with_a_vocab_given_by_data_options(tmp_path):
    data = tmp_path / "wbdc_release"
    rng = np.random.default_rng(0)
    _write_split(data, "labeled", 96, rng, labeled=True)
    _write_split(data, "test_a", 16, rng, labeled=False)
    assert not (data / "vocab.txt").exists()
    params = {
        "task": "wbdc", "data_dir": str(data), "make_sample": False, "steps": 12, "eval_every": 6,
        "batch_size": 16, "data_options": {"vocab_path": str(VOCAB), "max_frames": 8, "max_text_len": 32},
        "out_dir": str(tmp_path / "run" / "finetune-fold{fold}"),
    }  # fmt: skip
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params, allow_unicode=True))
    cmd = [sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "20_finetune.ipynb"),
           str(tmp_path / "out.ipynb"), "-f", str(tmp_path / "p.yaml"), "--cwd", str(ROOT), "-k", "python3",
           "--no-progress-bar"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    run = tmp_path / "run" / "finetune-fold0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["mean_f1"] <= 1.0, metrics
    assert (run / "model.safetensors").exists()
    saved = yaml.safe_load((run / "params.yaml").read_text())
    assert saved["data_options"]["vocab_path"] == str(VOCAB)
