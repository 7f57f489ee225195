"""The avfusion task's wiring on real sample files: explore, folds, model sizing, retrieval and QA out-of-fold
predictions, ensembles and submissions, and unreadable files skipped and counted, never fatal."""

import shutil

import numpy as np
import pytest
import torch

from vmmlib.app.cli import main
from vmmlib.submissions import get_format
from vmmlib.tasks import get_task
from vmmlib.train.loop import make_loader

T = get_task("avfusion")
OPTIONS = dict(num_frames=4, image_size=32, frame_strategy="uniform", max_text_len=16, with_audio=False)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return T.make_sample(tmp_path_factory.mktemp("avf") / "data", videos=20, val_videos=4, test_videos=4,
                         num_frames=8, frame_size=32, seed=1)  # fmt: skip


@pytest.fixture(scope="module")
def model(root):
    torch.manual_seed(0)
    return T.build_model(T.load(root, **OPTIONS), "avfusion_vt_tiny", {}, "")


@pytest.fixture
def broken(root, tmp_path):
    """A copy of the sample whose first training clip is not a video."""
    copy = shutil.copytree(root, tmp_path / "broken")
    (copy / "videos" / "video00000.mp4").write_bytes(b"not an mp4 at all")
    return copy


def test_explore_counts_every_split_and_an_unreadable_video_is_counted(broken):
    report = T.explore(broken, progress=False)
    splits = report.splits.set_index("split")
    assert splits.loc["retrieval/train", "items"] == 24 and splits.loc["retrieval/train", "files"] == 12
    assert splits.loc["qa/test", "items"] == 12 and splits.loc["manifest/validation", "files"] == 4
    assert splits.loc["manifest/train", "unreadable"] == 1 and splits.loc["retrieval/test", "unreadable"] == 0
    assert set(report.category_counts.index) == {"what", "where", "how"}
    assert (report.items.query("readable == 1")["num_frames"] == 8).all() and report.targets.gt(0).all()


def test_clip_folds_hold_out_whole_videos_with_all_their_captions(root):
    data = T.load(root, **OPTIONS)
    clips = data.retrieval("train").clips
    held_all = []
    for fold in range(3):
        train, held = T.finetune_datasets(data, 3, fold)
        trained = {clips[int(i)] for i in range(len(clips)) if i not in held}
        assert {data.retrieval("train").clips[int(v)] for v in held}.isdisjoint(trained)
        assert len(train) == 2 * len(trained)  # two captions per training clip
        held_all += held.tolist()
    assert sorted(held_all) == list(range(len(clips)))
    with pytest.raises(ValueError, match="one fold"):
        T.finetune_datasets(data, 2, 0, scheme="val")


def test_build_model_sizes_from_the_data_and_refuses_what_the_data_fixes(root):
    data = T.load(root, **OPTIONS)
    with pytest.raises(ValueError, match="num_frames"):
        T.build_model(data, "avfusion_vt_tiny", {"num_frames": 8}, "")
    with pytest.raises(ValueError, match="audio tower"):
        T.build_model(data, "avfusion_tiny", {}, "")
    qa = T.build_model(T.load(root, downstream="qa", **OPTIONS), "avfusion_vt_tiny", {}, "")
    assert qa.qa_head[-1].out_features == len(T.load(root, downstream="qa").answers)


def test_pretraining_batches_skip_a_broken_file_and_give_every_term(broken, model):
    data = T.load(broken, **OPTIONS)
    batch = next(iter(make_loader(T.pretrain_dataset(data), 4, shuffle=False)))
    assert "video00000.mp4" in batch["skipped"][0] and batch["skipped"][1:] == ["", "", ""]
    assert "audio" not in batch  # with_audio=False: no audio decoded for a text + video model
    terms = ("mlm", "video_mae", "vtm", "vtc")
    raw = T.pretrain_objective(data, terms)(model, batch)
    assert set(raw) == set(terms) and all(torch.isfinite(v) for v in raw.values())
    metrics = T.pretrain_eval(data)(model)
    assert 0 <= metrics[T.PRETRAIN_METRIC] <= 1


def test_retrieval_oof_ensemble_and_submission(root, model, tmp_path):
    data = T.load(root, **OPTIONS)
    _, held = T.finetune_datasets(data, 2, 1)
    oof = T.predict_fold(model, data, held, 1, rerank_k=3)
    assert len(oof["score"]) == 12 * 6 and oof["gt"].sum() == 12 and set(oof["split"]) == {"train"}
    single = T.oof_scorer([oof], data)([1.0])
    assert T.oof_scorer([oof, {**oof, "score": -oof["score"]}], data)([1.0, 0.0]) == single
    table = T.fold_table(oof, data)
    assert table["queries"].tolist() == [12, 12] and table["videos"].tolist() == [6, 6]
    assert T.fold_table(oof, data)["t2v_r10"].iloc[-1] == 1.0  # a 6-video gallery
    with pytest.raises(ValueError, match="differ"):
        T.oof_scorer([oof, {**oof, "text_id": oof["text_id"] + 1}], data)
    pred = T.predict([model, model], data, "test", progress=False)
    assert pred["sim"].shape == (4, 4)
    path = T.write_submission(tmp_path, [pred, pred], [0.5, 0.5], file_format="csv", top_k=2)
    fmt = get_format(T.SUBMISSION)
    assert fmt.validate(path, T.required_ids(data, "test")) == []
    assert fmt.evaluate(path, root / "retrieval" / "test.jsonl")["queries"] == 4


def test_an_unreadable_gallery_video_is_scored_as_zeros_and_counted(broken, model):
    data = T.load(broken, **OPTIONS)
    clips = data.retrieval("train").clips
    fold = next(f for f in (0, 1) if clips.index("video00000") in T.finetune_datasets(data, 2, f)[1])
    _, held = T.finetune_datasets(data, 2, fold)
    table = T.fold_table(T.predict_fold(model, data, held, 0), data)
    assert table["skipped"].tolist() == [1, 1]


def test_qa_downstream_predicts_answers_scores_per_type_and_writes_answers(root, tmp_path):
    data = T.load(root, downstream="qa", **OPTIONS)
    torch.manual_seed(0)
    net = T.build_model(data, "avfusion_vt_tiny", {}, "")
    train, held = T.finetune_datasets(data, 2, 0)
    batch = next(iter(make_loader(train, 4, shuffle=True)))
    loss = T.finetune_objective(data, ("qa",))(net, batch)["qa"]
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="do not apply"):
        T.finetune_objective(data, ("vtc",))
    oof = T.predict_fold(net, data, held, 0)
    assert oof["probs"].shape == (3 * len(held), len(data.answers))
    breakdown = T.oof_breakdown(oof, data)
    assert {"what_acc", "where_acc", "how_acc", "overall_acc"} <= set(breakdown)
    assert not {"who_acc", "when_acc"} & set(breakdown)  # types never asked here are not reported as 0
    correct = oof["probs"].argmax(1) == oof["label"]
    assert T.oof_scorer([oof], data)([1.0]) == pytest.approx(correct.mean())
    pred = T.predict([net], data, "test", progress=False)
    path = T.write_submission(tmp_path, [pred], [1.0])
    fmt = get_format(T.SUBMISSION)
    assert fmt.validate(path, T.required_ids(data, "test")) == []
    assert fmt.evaluate(path, root / "qa" / "test.jsonl")["overall_acc"] == pytest.approx(
        100 * np.mean(pred["answers"][pred["probs"].argmax(1)] == [r["answer"] for r in data.qa("test")])
    )


def test_vmm_sample_writes_the_avfusion_layout(tmp_path):
    out = tmp_path / "s"
    args = ["sample", "avfusion", str(out), "--videos", "5", "--val-videos", "1", "--test-videos", "1"]
    assert main([*args, "--num-frames", "4", "--frame-size", "16", "--seed", "2"]) == 0
    assert len(list((out / "videos").glob("*.mp4"))) == 5 and (out / "retrieval" / "test.jsonl").is_file()


def test_the_audio_model_pretrains_with_audio_mae_and_reranks_with_its_soundtrack(root):
    data = T.load(root, **{**OPTIONS, "with_audio": True, "audio_freq": 32, "audio_time": 64})
    torch.manual_seed(0)
    net = T.build_model(data, "avfusion_tiny", {}, "")
    batch = next(iter(make_loader(T.pretrain_dataset(data), 4, shuffle=False)))
    assert batch["audio"].shape == (4, 1, 32, 64)
    raw = T.pretrain_objective(data, T.PRETRAIN_TERMS)(net, batch)
    assert set(raw) == set(T.PRETRAIN_TERMS) and all(torch.isfinite(v) for v in raw.values())
    _, held = T.finetune_datasets(data, 2, 0)
    plain = T.predict_fold(net, data, held, 0)
    reranked = T.predict_fold(net, data, held, 0, rerank_k=2)
    top2 = np.sort(reranked["score"].reshape(12, 6), 1)[:, -2:]
    assert (top2 > plain["score"].max()).all()  # the ITM-scored top 2 sit above every cosine
