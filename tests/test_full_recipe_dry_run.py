"""A full recipe dry-runs at its real size (issue 17.3): the cheapest one, YouTube-8M Gated NetVLAD
pretraining (117 M parameters, batch 128; about 2 minutes and 3.5 GiB on 2 CPU cores).

Slow: it runs only with VMM_RUN_SLOW=1 (`VMM_RUN_SLOW=1 pytest -m slow tests/test_full_recipe_dry_run.py`);
`benchmarks/full_recipes.py` dry-runs every full recipe."""

import json
import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("VMM_RUN_SLOW"), reason="real-size dry run: set VMM_RUN_SLOW=1")
def test_yt8m_gated_netvlad_pretrain_recipe_dry_runs_at_full_size(tmp_path):
    import papermill

    from vmmlib.tasks import get_task

    data = get_task("yt8m").make_sample(tmp_path / "data")
    params = yaml.safe_load((ROOT / "params/yt8m/gated_netvlad_pretrain.yaml").read_text())
    params.update(dry_run=True, data_dir=str(data), out_dir=str(tmp_path / "pretrain"))
    papermill.execute_notebook(
        str(ROOT / "notebooks/10_pretrain.ipynb"), str(tmp_path / "out.ipynb"), parameters=params,
        kernel_name="python3", progress_bar=False, cwd=str(ROOT),
    )  # fmt: skip
    run = tmp_path / "pretrain-dry-run"
    assert not (tmp_path / "pretrain").exists()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dry_run"] is True
    recorded = yaml.safe_load((run / "params.yaml").read_text())
    assert recorded["steps"] == 2 and recorded["batch_size"] == 128 and recorded["dry_run"] is True
