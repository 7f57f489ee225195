"""The `wbdc` task wiring: data options, model sizing, objectives (pretraining terms, distillation),
evaluation, out-of-fold and test predictions, reports, the ensemble's submission and teacher file."""

import numpy as np
import pytest
import torch

from vmmlib.data.wbdc.reader import stratified_folds
from vmmlib.metrics.wbdc import f1_mean
from vmmlib.objectives import make_objective
from vmmlib.objectives.classification import distill_kl
from vmmlib.runs import OOF_FILE, load_arrays, save_arrays
from vmmlib.submissions import get_format
from vmmlib.tasks import get_task
from vmmlib.train.checkpoint import make_loader

T = get_task("wbdc")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: on 2 busy cores, two threads per process make these runs several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = T.make_sample(tmp_path_factory.mktemp("wbdc") / "data", labeled=120, unlabeled=60, test=20, seed=3)
    return T.load(root, max_frames=8, max_text_len=32, max_title_len=16, pretrain_eval_videos=20)


@pytest.fixture(scope="module")
def net(data):
    torch.manual_seed(0)
    return T.build_model(data, "wbdc_single_stream_tiny", {}, "")


def _batch(dataset, n=8):
    return next(iter(make_loader(dataset, n, shuffle=False)))


def test_load_refuses_unknown_options_naming_the_choices(data):
    with pytest.raises(ValueError, match="valid choices: features, none, raw"):
        T.load(data.data_dir, frames="pixels")
    with pytest.raises(ValueError, match="pretrain split"):
        T.load(data.data_dir, pretrain_splits=["test_b"])


def test_explore_counts_every_split_and_the_lv2_long_tail(data):
    report = T.explore(data.data_dir, progress=False)
    assert report.splits.set_index("split")["items"].to_dict() == {
        "labeled": 120,
        "unlabeled": 60,
        "test_a": 20,
    }
    assert int(report.label_counts.sum()) == 120 and len(report.label_counts) == 200
    assert (report.items.query("split == 'labeled'")["num_frames"] > 0).all()


def test_build_model_sizes_the_vocabulary_and_refuses_data_fixed_options(data, net):
    assert net.bert.get_input_embeddings().num_embeddings == len(data.tokenizer)
    assert net.heads is not None  # pretraining heads always built: checkpoints load strictly
    with pytest.raises(ValueError, match="vocab_size"):
        T.build_model(data, "wbdc_single_stream_tiny", {"vocab_size": 99}, "")


def test_padded_items_batch_with_the_default_collation(data):
    batch = _batch(T.pretrain_dataset(data))
    assert batch["text_ids"].shape == batch["text_mask"].shape == (8, 32)
    assert batch["title_ids"].shape == (8, 16) and batch["frames"].shape == (8, 8, 768)
    assert (batch["text_ids"][batch["text_mask"] == 0] == 0).all()


def test_pretraining_terms_are_finite_and_the_eval_reports_the_pretrain_metric(data, net):
    objective = make_objective(
        T.pretrain_objective, T.PRETRAIN_TERMS, data, {t: 1.0 for t in T.PRETRAIN_TERMS}
    )
    terms = objective(net, _batch(T.pretrain_dataset(data)))
    assert set(terms) == set(T.PRETRAIN_TERMS) and all(torch.isfinite(v) for v in terms.values())
    scores = T.pretrain_eval(data)(net)
    assert {"mlm_acc", "itm_acc", "clip_acc"} <= set(scores)
    assert scores[T.PRETRAIN_METRIC] == pytest.approx(
        np.mean([scores[k] for k in ("mlm_acc", "itm_acc", "clip_acc")])
    )


def test_pretraining_holds_out_videos_that_it_does_not_train_on(data):
    parts, (split, held) = data.pretrain_parts()
    trained = {data.ids(s)[i] for s, rows in parts for i in rows}
    assert len(held) == 12 and not trained & {data.ids(split)[i] for i in held}  # min(20, 60 // 5)


def test_folds_are_the_seeds_stratified_lv2_folds(data):
    train_set, val_idx = T.finetune_datasets(data, 3, 1)
    np.testing.assert_array_equal(val_idx, stratified_folds(data.labels, 3, 1, seed=802)[1])
    assert len(train_set) + len(val_idx) == 120


def test_distill_kl_is_zero_for_the_teachers_own_logits_and_scales_with_t_squared():
    logits = torch.randn(4, 200)
    probs = torch.softmax(logits, -1)
    assert distill_kl(logits, probs, 3.0) == pytest.approx(0.0, abs=1e-5)
    other = torch.randn(4, 200)
    kl1 = torch.nn.functional.kl_div(torch.log_softmax(other, -1), probs, reduction="batchmean")
    assert distill_kl(other, probs, 1.0) == pytest.approx(float(kl1), rel=1e-4)


def test_distill_term_reads_the_teacher_by_video_id(data, net, tmp_path):
    train_set, _ = T.finetune_datasets(data, 3, 0)
    with pytest.raises(ValueError, match="teacher"):
        T.finetune_objective(data, ("ce", "distill"))
    ids = np.asarray(data.ids("labeled"))
    probs = np.full((len(ids), 200), 1e-6, np.float32)
    probs[np.arange(len(ids)), data.labels] = 1.0
    save_arrays(tmp_path / "teacher.npz", {"ids": ids, "probs": probs})
    objective = T.finetune_objective(
        data, ("ce", "distill"), teacher=str(tmp_path / "teacher.npz"), temperature=1.0
    )
    terms = objective(net, _batch(train_set))
    assert float(terms["distill"]) == pytest.approx(
        float(terms["ce"]), rel=0.05
    )  # a one-hot teacher is the label
    save_arrays(tmp_path / "partial.npz", {"ids": ids[:5], "probs": probs[:5]})
    partial = T.finetune_objective(data, ("distill",), teacher=str(tmp_path / "partial.npz"))
    with pytest.raises(KeyError, match="no probabilities for video"):
        partial(net, _batch(train_set))


def test_fold_predictions_reports_and_the_oof_scorer_agree_with_the_metric(data, net):
    _, val_idx = T.finetune_datasets(data, 3, 0)
    oof = T.predict_fold(net, data, val_idx, fold=0)
    assert oof["probs"].shape == (len(val_idx), 200) and np.allclose(oof["probs"].sum(1), 1, atol=1e-4)
    expected = f1_mean(oof["labels"], oof["probs"].argmax(1))["mean_f1"]
    assert T.finetune_eval(data, val_idx)(net)[T.METRIC] == pytest.approx(expected)
    assert T.oof_scorer([oof], data)([1.0]) == pytest.approx(expected)
    table = T.fold_table(oof, data)
    assert table.attrs["lv1_confusion"].shape == (23, 23) and table.attrs["lv1_confusion"].sum() == len(
        val_idx
    )
    assert set(table.columns) >= {"lv2", "support", "f1"}
    T.plot_fold(table, "t")


def test_ensemble_writes_a_valid_result_csv_and_the_teacher_file(data, net, tmp_path):
    _, val_idx = T.finetune_datasets(data, 3, 0)
    oof = T.predict_fold(net, data, val_idx, fold=0)
    dirs = []
    for k in range(2):  # two "models": the second one's probabilities in reverse order
        folder = tmp_path / f"inference{k}"
        order = np.arange(len(val_idx))[:: 1 if k == 0 else -1]
        save_arrays(folder / OOF_FILE, {key: v[order] for key, v in oof.items()})
        dirs.append(str(folder))
    test = T.predict([net], data, "test_a", progress=False)
    flipped = {"ids": test["ids"][::-1], "probs": test["probs"][::-1]}
    path = T.write_submission(tmp_path / "ens", [test, flipped], [1.0, 0.7], teacher_dirs=dirs)
    assert get_format(T.SUBMISSION).validate(path, T.required_ids(data, "test_a")) == []
    ensembled = load_arrays(tmp_path / "ens/ensemble_test.npz")
    np.testing.assert_allclose(ensembled["probs"], test["probs"], rtol=1e-5)  # same model, weights normalised
    teacher = load_arrays(tmp_path / "ens/teacher.npz")
    np.testing.assert_array_equal(teacher["ids"], oof["ids"])
    np.testing.assert_allclose(teacher["probs"], oof["probs"], rtol=1e-5)
    with pytest.raises(ValueError, match="teacher_dirs"):
        T.write_submission(tmp_path / "bad", [test, flipped], [1.0, 1.0], teacher_dirs=dirs[:1])
    with pytest.raises(ValueError, match="teacher_dirs"):
        T.ensemble_search_space({"rank_decay": 1.0})


def test_vmm_sample_wbdc_takes_the_split_sizes_and_signal(tmp_path):
    from vmmlib.app.cli import main

    args = ["sample", "wbdc", str(tmp_path / "d"), "--labeled", "12", "--unlabeled", "6", "--test", "4"]
    assert main([*args, "--signal", "0.5", "--seed", "1"]) == 0
    data = T.load(tmp_path / "d")
    assert [len(data.ids(s)) for s in ("labeled", "unlabeled", "test_a")] == [12, 6, 4]


def test_predict_with_int8_inference_agrees_with_eager_on_most_videos(data, net):
    eager = T.predict([net], data, "test_a", progress=False)
    fast = T.predict([net], data, "test_a", infer_backend="int8", progress=False)
    np.testing.assert_array_equal(fast["ids"], eager["ids"])
    assert (fast["probs"].argmax(1) == eager["probs"].argmax(1)).mean() >= 0.9
    assert fast["infer"] == {"infer_backend": "int8"} and eager["infer"] == {"infer_backend": "eager"}
    with pytest.raises(ValueError, match="infer_backend"):
        T.predict([net], data, "test_a", infer_backend="tensorrt")


def test_predict_with_auto_inference_reports_what_it_timed_and_picked(data, net, monkeypatch, capsys):
    import vmmlib.predict.backends as FI

    monkeypatch.setattr(FI, "AUTO_CANDIDATES", ("int8",))  # the ONNX export is timed in test_fast_inference
    eager = T.predict([net], data, "test_a", progress=False)
    fast = T.predict([net], data, "test_a", infer_backend="auto", progress=False)
    np.testing.assert_array_equal(fast["ids"], eager["ids"])
    report = fast["infer"]
    assert report["infer_backend"] in ("eager", "int8") and report["infer_rate_eager"] > 0
    assert set(report) >= {"infer_rate_int8", "infer_agreement_int8", "infer_engine"}
    assert f"picked {report['infer_backend']}" in capsys.readouterr().out
