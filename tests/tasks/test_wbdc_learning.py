"""Training really learns: a short CPU fine-tune of the tiny single stream lifts the held-out F1-mean
far above the untrained model, and distilling from a teacher's probabilities learns as well.

Pretraining then fine-tuning beats fine-tuning alone only when the pretraining is long enough and
the labels few (the slow test below, measured on folds 0/1 of 3 with 150 labelled and 1,500 unlabeled
videos, signal 0.4: 0.456 / 0.387 after 1,500 steps of MLM + ICT + CLIP against 0.419 / 0.336 from
scratch). Short pretraining did not help: with 300 labelled videos (signal 0.6) and 200–300 steps of
MLM+ITM, all five seed terms, or ICT+CLIP, fold 0 ended at 0.57–0.64 against 0.70 from scratch
(pretrained runs start higher, 0.36 vs 0.26 at step 30, then fall behind)."""

import os

import numpy as np
import pytest
import torch

from vmmlib.objectives import make_objective
from vmmlib.runs import save_arrays, submitted_weights
from vmmlib.tasks import get_task
from vmmlib.train.checkpoint import load_weights
from vmmlib.train.loop import fit, make_loader

T = get_task("wbdc")
MARGIN = 0.3  # held-out F1-mean must rise by at least this much (measured: 0.01 untrained → 0.54 with ce, 0.52 from the teacher alone)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on 2 busy cores, two threads per process make these runs ~10× slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = T.make_sample(
        tmp_path_factory.mktemp("learn") / "wbdc", labeled=300, unlabeled=20, test=10, seed=5
    )
    return T.load(root, max_frames=8, max_text_len=32, max_title_len=16, pretrain_eval_videos=4)


def _finetune(data, out_dir, objectives, options=None, steps=60):
    torch.manual_seed(0)
    net = T.build_model(data, "wbdc_single_stream_tiny", {}, "")
    train_set, val_idx = T.finetune_datasets(data, 3, 0)
    eval_fn = T.finetune_eval(data, val_idx)
    before = eval_fn(net)[T.METRIC]
    objective = make_objective(T.finetune_objective, T.FINETUNE_TERMS, data, objectives, options)
    result = fit(
        net, make_loader(train_set, 32, shuffle=True, seed=0, drop_last=True), objective, steps=steps, lr=2e-3,
        warmup_steps=10, eval_fn=eval_fn, eval_every=steps // 2, metric=T.METRIC, out_dir=out_dir, progress=False,
    )  # fmt: skip
    return net, before, result, val_idx


def test_short_finetune_beats_the_untrained_model_on_the_held_out_fold(data, tmp_path):
    net, before, result, val_idx = _finetune(data, tmp_path, {"ce": 1.0})
    assert result.best_metric > before + MARGIN, (before, result.best_metric)
    load_weights(net, submitted_weights(tmp_path))
    oof = T.predict_fold(net, data, val_idx, fold=0)
    assert T.oof_scorer([oof], data)([1.0]) == pytest.approx(result.best_metric)


def test_a_student_learns_from_the_teachers_probabilities_alone(data, tmp_path):
    """Distillation without labels: the teacher is the truth, softened (0.9 on the class, 0.1 spread over
    the other 199); the student must learn the classes from the `distill` term alone."""
    ids = np.asarray(data.ids("labeled"))
    probs = np.full((len(ids), 200), 0.1 / 199, np.float32)
    probs[np.arange(len(ids)), data.labels] = 0.9
    save_arrays(tmp_path / "teacher.npz", {"ids": ids, "probs": probs})
    _, before, result, _ = _finetune(
        data,
        tmp_path / "student",
        {"distill": 1.0},
        {"teacher": str(tmp_path / "teacher.npz"), "temperature": 2.0},
    )
    assert result.best_metric > before + MARGIN, (before, result.best_metric)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("VMM_RUN_SLOW"), reason="minutes of pretraining: set VMM_RUN_SLOW=1")
def test_long_pretraining_then_finetuning_beats_finetuning_alone(tmp_path):
    """~3 CPU-minutes of pretraining (10 on busy cores): MLM + ICT + CLIP on 1,500 unlabeled videos,
    then 120 fine-tuning steps on 100 labelled ones; the mean F1-mean of folds 0 and 1 must beat the
    same fine-tuning from scratch by 0.02 (measured: +0.044)."""
    root = T.make_sample(tmp_path / "wbdc", labeled=150, unlabeled=1500, test=40, signal=0.4)
    data = T.load(root, max_text_len=64, max_frames=16)
    torch.manual_seed(0)
    net = T.build_model(data, "wbdc_single_stream_tiny", {}, "")
    objective = make_objective(
        T.pretrain_objective, T.PRETRAIN_TERMS, data, {"clip": 1.0, "ict": 1.0, "mlm": 1.0}
    )
    fit(
        net, make_loader(T.pretrain_dataset(data), 32, shuffle=True, drop_last=True), objective, steps=1500,
        lr=2e-3, warmup_steps=10, out_dir=tmp_path / "pre", progress=False,
    )  # fmt: skip
    scores = {True: [], False: []}
    finetune = make_objective(T.finetune_objective, T.FINETUNE_TERMS, data, {"ce": 1.0})
    for fold in (0, 1):
        for pretrained in (True, False):
            torch.manual_seed(0)
            model = T.build_model(data, "wbdc_single_stream_tiny", {}, "")
            if pretrained:
                load_weights(model, tmp_path / "pre/model.safetensors")
            train_set, val_idx = T.finetune_datasets(data, 3, fold)
            result = fit(
                model, make_loader(train_set, 32, shuffle=True, drop_last=True), finetune, steps=120, lr=2e-3,
                warmup_steps=10, eval_fn=T.finetune_eval(data, val_idx), eval_every=30, metric=T.METRIC,
                out_dir=tmp_path / f"ft{fold}{pretrained}", progress=False,
            )  # fmt: skip
            scores[pretrained].append(result.best_metric)
    assert np.mean(scores[True]) > np.mean(scores[False]) + 0.02, scores
