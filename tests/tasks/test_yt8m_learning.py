"""Training really learns: a short CPU segment fine-tune beats the untrained model on held-out shards."""

import numpy as np
import pytest
import torch

from vmmlib.data.yt8m.sample import write_yt8m_sample
from vmmlib.objectives import make_objective
from vmmlib.runs import submitted_weights
from vmmlib.tasks import get_task
from vmmlib.train.checkpoint import load_weights
from vmmlib.train.loop import fit, make_loader

T = get_task("yt8m")
MARGIN = 0.2  # held-out segment mAP must rise by at least this much (measured: 0.57 → 0.88 rated-only, → 0.80 seed loss)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = write_yt8m_sample(
        tmp_path_factory.mktemp("learn") / "yt8m", videos=8, validate_videos=100, test_videos=4,
        train_shards=1, validate_shards=4, test_shards=1, seed=5,
    )  # fmt: skip
    return T.load(root, window=5, cache=False)


@pytest.mark.parametrize("unrated_as_negative", [False, True], ids=["rated-entries", "seed-all-negatives"])
def test_short_finetune_beats_the_untrained_model_on_held_out_shards(data, unrated_as_negative, tmp_path):
    torch.manual_seed(0)
    net = T.build_model(data, "framebert_mean_yt8m_tiny", {}, "")
    train_set, val_idx = T.finetune_datasets(data, 4, 0)
    eval_fn = T.finetune_eval(data, val_idx)
    before = eval_fn(net)[T.METRIC]
    result = fit(
        net, make_loader(train_set, 32, shuffle=True, seed=0, drop_last=True), make_objective(T.finetune_objective, T.FINETUNE_TERMS, data, {"bce": 1.0, "l2": 1.0}, {"unrated_as_negative": unrated_as_negative}),
        steps=200, lr=2e-3, eval_fn=eval_fn, eval_every=50, metric=T.METRIC, out_dir=tmp_path, progress=False,
    )  # fmt: skip
    assert result.best_metric > before + MARGIN, (before, result.best_metric)
    load_weights(net, submitted_weights(tmp_path))
    oof = T.predict_fold(net, data, val_idx, fold=0)
    assert T.fold_table(oof, data)["ap_shift+0"].mean() == pytest.approx(result.best_metric)
    assert np.isfinite(oof["score"]).all()
