"""Training really learns: a short CPU fine-tune beats the untrained model on held-out pairs."""

import os

import numpy as np
import pytest
import torch

from vmmlib.data.qqbrowser.sample import write_qqbrowser_sample
from vmmlib.objectives import make_objective
from vmmlib.runs import submitted_weights
from vmmlib.tasks import get_task
from vmmlib.train.checkpoint import load_weights
from vmmlib.train.loop import fit, make_loader

T = get_task("qqbrowser")
MARGIN = 0.25  # validation Spearman must rise by at least this much over the untrained model


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = write_qqbrowser_sample(
        tmp_path_factory.mktemp("learn") / "qq",
        videos=40,
        pairs=900,
        pair_videos=220,
        test_videos=5,
        shards=2,
        seed=11,
    )
    return T.load(root)


SLOW = [  # each ~1-2 min on 2 cores: run with VMM_RUN_SLOW=1 (UNITER, seed 000's main family, always runs)
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("VMM_RUN_SLOW"), reason="slow: set VMM_RUN_SLOW=1"),
]


@pytest.mark.parametrize(
    "model",
    [
        "uniter_qq_tiny",
        pytest.param("mixnextvlad_qq_tiny", marks=SLOW),
        pytest.param("qq_baseline_tiny", marks=SLOW),
    ],
)
def test_short_finetune_beats_the_untrained_model_on_held_out_pairs(data, model, tmp_path):
    torch.manual_seed(0)
    net = T.build_model(data, model, {}, "")
    train_set, val_idx = T.finetune_datasets(data, 5, 0)
    eval_fn = T.finetune_eval(data, val_idx)
    before = eval_fn(net)["spearman"]
    result = fit(
        net, make_loader(train_set, 32, shuffle=True, seed=0, drop_last=True), make_objective(T.finetune_objective, T.FINETUNE_TERMS, data, {"mse": 1, "kl": 0.5, "tag": 1}),
        steps=80, lr=2e-3, warmup_steps=10, eval_fn=eval_fn, eval_every=40, metric="spearman", out_dir=tmp_path, progress=False,
    )  # fmt: skip
    assert result.best_metric > before + MARGIN, (before, result.best_metric)
    load_weights(net, submitted_weights(tmp_path))
    oof = T.predict_fold(net, data, val_idx, fold=0)
    table = T.fold_table(oof, data)
    assert len(table) == len(val_idx) and np.isfinite(table["cosine"]).all()
    assert oof["emb_a"].shape == (len(val_idx), 256)
    assert T.oof_scorer([oof], data)([1.0]) == pytest.approx(result.best_metric, abs=1e-6)
