"""`vmm prepare muge`: options that decide what is stored are part of its fingerprint, and its
checking workers die with it (issue 16.2, 16.6)."""

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from vmmlib.data.muge.prepare import STATE_FILE, prepare_muge


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(out, format="JPEG")
    return out.getvalue()


def _write(root: Path) -> None:
    good = base64.b64encode(_jpeg()).decode()
    truncated = base64.b64encode(_jpeg()[:-40]).decode()  # no end-of-image marker
    (root / "train_imgs.tsv").write_text(f"1\t{good}\n2\t{truncated}\n")
    (root / "train_texts.jsonl").write_text(
        json.dumps({"text_id": 1, "text": "a", "image_ids": [1, 2]}) + "\n"
    )


def test_a_rerun_with_a_stricter_check_checks_again_instead_of_saying_skipped(tmp_path):
    _write(tmp_path)
    loose = prepare_muge(tmp_path, check="none", progress=False)["train"]
    assert (loose.images, loose.bad_images) == (2, 0)
    strict = prepare_muge(tmp_path, check="fast", progress=False)["train"]
    assert not strict.skipped and (strict.images, strict.bad_images) == (1, 1)
    assert prepare_muge(tmp_path, check="fast", progress=False)["train"].skipped  # same options: kept
    state = json.loads((tmp_path / "lmdb" / "train" / STATE_FILE).read_text())
    assert state["options"] == {"check": "fast", "on_error": "skip"}


def test_a_rerun_with_another_on_error_or_a_torn_state_file_starts_over(tmp_path):
    import pytest

    from vmmlib.data.muge.prepare import MugeDataError

    _write(tmp_path)
    with pytest.raises(MugeDataError, match="train_imgs.tsv:2"):
        prepare_muge(tmp_path, check="fast", on_error="raise", progress=False)
    first = prepare_muge(tmp_path, check="fast", on_error="skip", progress=False)["train"]
    assert not first.skipped and first.bad_images == 1
    (tmp_path / "lmdb" / "train" / STATE_FILE).write_text("{not json")  # a torn state file
    again = prepare_muge(tmp_path, check="fast", on_error="skip", progress=False)["train"]
    assert not again.skipped and again.bad_images == 1


WORKER = """
import os, sys, time
from vmmlib.data.worker_pool import process_pool
pool = process_pool(1)
print(pool.submit(os.getpid).result(), flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its parent's reaping is missing


def test_a_checking_worker_dies_when_its_parent_is_killed_with_sigkill():
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    parent = subprocess.Popen([sys.executable, "-c", WORKER], stdout=subprocess.PIPE, text=True, env=env)
    try:
        worker = int(parent.stdout.readline())
        assert _alive(worker)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker), f"worker {worker} outlived its parent"
    finally:
        parent.kill()
