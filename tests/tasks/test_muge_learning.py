"""Training really learns, and so does online learning: a short CPU fine-tune of the tiny Chinese-CLIP
on small sample images beats the untrained model's valid mean recall by a stated margin, and online
learning from the sample's cache then lifts it further (the cache shows the colours training never
named)."""

import warnings

import numpy as np
import pytest
import torch

from vmmlib.objectives import make_objective
from vmmlib.runs import submitted_weights
from vmmlib.tasks import get_task
from vmmlib.train.checkpoint import load_weights
from vmmlib.train.loop import fit, make_loader

T = get_task("muge")
MARGIN = 0.08  # valid mean recall must rise by this much (measured: 0.04 untrained → 0.157 after 80 steps)
ONLINE_MARGIN = 0.02  # online learning on the valid cache must add this much (measured: 0.157 → 0.21)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = T.make_sample(tmp_path_factory.mktemp("learn") / "muge", train_texts=400, valid_texts=100,
                         test_texts=10, distractors=50, image_size=32, seed=0)  # fmt: skip
    return T.load(root, context_length=24, image_size=32, use_augment=False)


def test_short_finetune_beats_the_untrained_model_and_online_learning_adds_to_it(data, tmp_path):
    torch.manual_seed(0)
    net = T.build_model(data, "cnclip_vitb16_tiny", {"patch_size": 16}, "")
    train_set, val_idx = T.finetune_datasets(data, 1, 0)
    eval_fn = T.finetune_eval(data, val_idx)
    before = eval_fn(net)[T.METRIC]
    objective = make_objective(T.finetune_objective, T.FINETUNE_TERMS, data, {"contrastive": 1.0}, {})
    result = fit(
        net, make_loader(train_set, 32, shuffle=True, seed=0, drop_last=True), objective, steps=80, lr=1e-3,
        warmup_steps=10, eval_fn=eval_fn, eval_every=40, metric=T.METRIC, out_dir=tmp_path, progress=False,
    )  # fmt: skip
    assert result.best_metric > before + MARGIN, (before, result.best_metric)
    load_weights(net, submitted_weights(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the sample's missing and broken cache entries
        oof = T.predict_fold(net, data, val_idx, 0, online_cache="online_cache", online_lr=3e-4,
                             online_epochs=5, online_batch_size=32)  # fmt: skip
    parts = T.oof_breakdown(oof, data)
    assert parts["offline"] == pytest.approx(result.best_metric)
    online = T.oof_scorer([oof], data)([1.0])
    assert online > parts["offline"] + ONLINE_MARGIN, (parts["offline"], online)
    assert np.isfinite(oof["text_features"]).all() and oof["online_cache_counts"][0] > 80
