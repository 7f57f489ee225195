import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vmmlib.app.cli import main
from vmmlib.data.yt8m.sample import write_yt8m_sample
from vmmlib.metrics.yt8m import read_kaggle_csv, segment_map, write_kaggle_csv
from vmmlib.objectives import make_objective
from vmmlib.predict.loop import load_fold_models
from vmmlib.ranking import TTA_RANK_DECAY, Ranking, TopK, rank_vote
from vmmlib.runs import load_arrays, save_arrays, write_yaml
from vmmlib.submissions import yt8m as kaggle_csv
from vmmlib.tasks import get_task
from vmmlib.train.checkpoint import save_weights
from vmmlib.train.loop import fit, make_loader

T = get_task("yt8m")
SMALL = dict(videos=24, validate_videos=32, test_videos=6, train_shards=2, validate_shards=4, test_shards=1)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_yt8m_sample(tmp_path_factory.mktemp("yt8m") / "data", seed=3, **SMALL)


@pytest.fixture(scope="module")
def data(root):
    return T.load(root, window=5, cache=False)


def _tiny(data):
    torch.manual_seed(0)
    return T.build_model(data, "framebert_mean_yt8m_tiny", {}, "")


def test_the_task_is_registered_under_its_name_and_metric():
    assert T.NAME == "yt8m" and T.METRIC == "segment_map"


def test_explore_counts_videos_rated_segments_labels_and_verticals(root):
    report = T.explore(root, progress=False)
    rows = report.splits.set_index("split")
    assert rows.loc["frame/validate", "items"] == 32 and rows.loc["frame/train", "items"] == 24
    assert rows.loc["video/train", "items"] == 24 and rows.loc["frame/validate", "rated_segments"] > 0
    assert len(report.label_counts) == 3862 and report.label_counts.sum() > 0
    assert all(str(c).startswith("Topic") for c in report.category_counts.index)  # vocabulary.csv Vertical1
    assert set(report.targets.unique()) <= {0.0, 1.0} and len(report.targets) > 0


def test_shard_folds_hold_out_whole_shards_and_train_on_the_others(data):
    held = []
    for fold in range(4):
        train, val_idx = T.finetune_datasets(data, 4, fold)
        assert list(val_idx) == [fold]
        held_videos = set(data.view("frame/validate", val_idx).ids)
        assert held_videos and not held_videos & {
            i.split(":")[0] for i in (train[j]["id"] for j in range(len(train)))
        }
        held += list(val_idx)
    assert sorted(held) == [0, 1, 2, 3]
    _, seed_holdout = T.finetune_datasets(data, 4, 0, scheme="holdout")
    assert list(seed_holdout) == [0]  # the first shard in the seed's order, capped at a quarter of 4 shards
    with pytest.raises(ValueError, match="valid choices: holdout, shard"):
        T.finetune_datasets(data, 4, 0, scheme="seed")
    with pytest.raises(TypeError):
        T.finetune_datasets(data, 4, 0, fold_size=10)  # folds are whole shards: no fold size


def test_pretraining_reads_train_videos_and_with_train_all_the_non_held_out_validate_shards(root, data):
    plain = T.pretrain_dataset(data)
    assert len(plain) == 24 and plain[0]["frames"].shape == (5, 1152) and plain[0]["labels"].shape == (3862,)
    train_all = T.load(root, window=5, train_all=True)  # frames memory-mapped from the disk cache
    everything = T.pretrain_dataset(train_all)
    assert len(everything) == 24 + 32 - len(train_all.view("validate", train_all.holdout()))
    assert np.array_equal(everything[3]["frames"], plain[3]["frames"])
    stream = T.pretrain_dataset(T.load(root, window=5, train_all=True, stream=True))
    assert len(stream) == len(everything) and next(iter(stream))["frames"].shape == (5, 1152)


def test_streamed_pretraining_runs_through_the_notebook_loader_and_resumes(root, tmp_path):
    streamed = T.load(root, window=5, stream=True)
    args = dict(lr=1e-3, schedule_steps=6, progress=False, seed=0, save_every=3)

    def run(out, steps):
        torch.manual_seed(0)
        net = T.build_model(streamed, "framebert_yt8m_tiny", {}, "")
        loader = make_loader(T.pretrain_dataset(streamed), 4, shuffle=True, seed=0, drop_last=True)
        fit(net, loader, T.pretrain_objective(streamed, ("bce",)), out_dir=out, **{**args, "steps": steps})
        return load_file(out / "model.safetensors")

    whole = run(tmp_path / "whole", 6)  # 24 train videos / 4 = 6 batches: one epoch
    run(tmp_path / "split", 4)
    resumed = run(tmp_path / "split", 6)
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_objectives_reject_unknown_terms_listing_the_valid_ones(data):
    with pytest.raises(
        ValueError, match="unknown objective term.*focal.*valid terms: bce, branch_bce, distill, l2"
    ):
        make_objective(T.pretrain_objective, T.PRETRAIN_TERMS, data, {"focal": 1.0})
    with pytest.raises(ValueError, match="valid choices: bce"):
        make_objective(T.finetune_objective, T.FINETUNE_TERMS, data, {"bce": 1.0}, {"tag_loss": "asl"})


def test_a_text_model_or_a_data_sized_option_is_refused_with_the_reason(root, data):
    with pytest.raises(ValueError, match="yt8m has no text"):
        T.load(root, text_model_dir="models/bert")
    with pytest.raises(ValueError, match="yt8m has no text"):
        T.build_model(data, "framebert_yt8m_tiny", {}, "models/bert")
    with pytest.raises(ValueError, match="num_classes comes from the data"):
        T.build_model(data, "framebert_yt8m_tiny", {"num_classes": 10}, "")


def test_segment_loss_reads_only_rated_entries_unless_unrated_count_as_negatives(data, root):
    net = _tiny(data)
    train, _ = T.finetune_datasets(data, 4, 0)
    batch = torch.utils.data.default_collate([train[j] for j in range(4)])
    objective = T.finetune_objective(data, ("bce",))
    logits = torch.randn(4, 3862)
    net.forward = lambda frames, frame_mask, **_: {"logits": logits}
    rated = batch["label_weights"] > 0
    expected = (
        torch.nn.functional.binary_cross_entropy_with_logits(
            logits[rated], batch["labels"][rated], reduction="sum"
        )
        / 4
    )
    assert torch.allclose(objective(net, batch)["bce"], expected)
    every_class = T.finetune_objective(data, ("bce",), unrated_as_negative=True)(net, batch)["bce"]
    all_entries = (
        torch.nn.functional.binary_cross_entropy_with_logits(logits, batch["labels"], reduction="sum") / 4
    )
    assert torch.allclose(every_class, all_entries)


def test_mixnextvlad_objective_adds_distillation_and_the_tf_l2_term(data):
    torch.manual_seed(0)
    net = T.build_model(data, "mixnextvlad_yt8m_tiny", {}, "")
    batch = torch.utils.data.default_collate([T.pretrain_dataset(data)[j] for j in range(4)])
    weights = {"bce": 1.0, "distill": 9.0, "l2": 1.0}
    terms = make_objective(T.pretrain_objective, T.PRETRAIN_TERMS, data, weights)(net, batch)
    assert set(terms) == {"bce", "distill", "l2"} and all(torch.isfinite(t) for t in terms.values())
    assert torch.allclose(terms["l2"], net.l2_penalty())


def test_rank_vote_sums_w0_over_rank_plus_w0_times_the_list_weight():
    a = Ranking(np.array([7]), np.array([[0, 1, 2]]), np.zeros((1, 3), np.float32))
    b = Ranking(np.array([7]), np.array([[2, 3, -1]]), np.zeros((1, 3), np.float32))
    merged = rank_vote([a, b], [1.0, 2.0], rank_decay=1.0)
    # segment 0: 1·1/1 = 1; 1: 1/2; 2: 1/3 + 2·1/1 = 7/3; 3: 2·1/2 = 1
    assert merged.index.tolist() == [[2, 0, 3, 1]]  # the tie 0 vs 3 goes to the lower index
    assert np.allclose(merged.score, [[7 / 3, 1, 1, 1 / 2]])
    assert rank_vote([a, b], [1.0, 2.0], rank_decay=1.0, top_k=2).index.tolist() == [[2, 0]]


def test_top_segments_streamed_in_blocks_equals_a_full_sort():
    scores = np.random.default_rng(0).random((103, 3)).astype(np.float32)
    top = TopK([5, 6, 7], 10, merge_rows=16)
    for start in range(0, 103, 7):
        top.add(scores[start : start + 7])
    ranking = top.result()
    assert ranking.index.tolist() == np.argsort(-scores, axis=0, kind="stable")[:10].T.tolist()
    assert np.allclose(ranking.score, -np.sort(-scores, axis=0)[:10].T)


def test_oof_score_of_a_rank_vote_equals_the_official_metric_of_the_merged_lists(data):
    truth = data.truth()
    videos = sorted({s.rsplit(":", 1)[0] for s, _ in truth})[:12]
    ids = [f"{v}:{5 * k}" for v in videos for k in range(8)]
    rng = np.random.default_rng(1)
    oofs = []
    for _ in range(2):
        index = np.stack(
            [np.stack([rng.permutation(len(ids))[:80] for _ in data.classes.class_ids]) for _ in (-1, 0)]
        )
        oofs.append({"segment_ids": np.array(ids), "class_ids": data.classes.class_ids, "shifts": np.array([-1, 0]),
                     "index": index, "score": np.zeros(index.shape, np.float32), "fold": np.zeros(len(ids))})  # fmt: skip
    got = T.oof_scorer(oofs, data)([0.3, 0.7], rank_decay=2.5)
    assert T.oof_scorer(oofs, data, rank_decay=2.5)([0.3, 0.7]) == got
    tta = [
        rank_vote(
            [Ranking(o["class_ids"], o["index"][h], o["score"][h]) for h in range(2)],
            rank_decay=TTA_RANK_DECAY,
        )
        for o in oofs
    ]
    merged = rank_vote(tta, [0.3, 0.7], rank_decay=2.5)
    held = {k: v for k, v in truth.items() if k[0].rsplit(":", 1)[0] in set(videos)}
    assert got == pytest.approx(segment_map(merged.to_submission(ids), held), abs=1e-12)
    assert T.oof_scorer(oofs[:1], data)([1.0]) == pytest.approx(segment_map(tta[0].to_submission(ids), held))


def test_fold_predictions_rank_held_out_segments_per_shift_and_match_the_validation_metric(data, tmp_path):
    net = _tiny(data)
    parts = []
    for fold in (0, 1):
        _, val_idx = T.finetune_datasets(data, 4, fold)
        part = T.predict_fold(net, data, val_idx, fold, shifts=(-1, 0))
        table = T.fold_table(part, data)
        assert {"ap_shift-1", "ap_shift+0", "ap_tta"} <= set(table.columns) and (table["positives"] > 0).all()
        # the eval on rated segments equals the official metric of the full shift-0 ranking
        assert T.finetune_eval(data, val_idx)(net)["segment_map"] == pytest.approx(table["ap_shift+0"].mean())
        parts.append(load_arrays(save_arrays(tmp_path / f"oof{fold}.npz", part)))
    oof = T.merge_oof(parts)
    assert oof["index"].shape[:2] == (2, 1000) and len(oof["segment_ids"]) == sum(
        len(p["segment_ids"]) for p in parts
    )
    assert 0 < T.oof_scorer([oof], data)([1.0]) <= 1
    # per-shift out-of-fold scores (the pipeline index shows them) equal the official per-shift mAP
    by_shift = T.oof_breakdown(parts[1], data)
    assert by_shift == pytest.approx(
        {"shift-1": table["ap_shift-1"].mean(), "shift+0": table["ap_shift+0"].mean()}
    )
    assert by_shift.keys() == T.oof_breakdown(oof, data).keys()
    fig = T.plot_fold(table, "fold 1")
    assert len(fig.axes) == 2


def _fold_dir(tmp_path, data, name="fold0"):
    folder = tmp_path / name
    folder.mkdir()
    write_yaml(
        folder / "params.yaml", {"model": "framebert_mean_yt8m_tiny", "data_options": {}, "model_options": {}}
    )
    save_weights(_tiny(data), folder / "model.safetensors")
    return folder


def test_inference_round_trips_and_the_ensemble_csv_is_valid_and_scored_officially(data, root, tmp_path):
    folder = _fold_dir(tmp_path, data)
    models = load_fold_models([folder], T, data)
    predictions = T.predict(models, data, "validate", shifts=[-1, 0], progress=False)
    assert predictions["shifts"].tolist() == [-1, 0] and predictions["index"].shape[:2] == (2, 1000)
    assert np.isfinite(predictions["score"]).all()
    ids = predictions["segment_ids"].tolist()
    rankings = [
        Ranking(predictions["class_ids"], i, s) for i, s in zip(predictions["index"], predictions["score"])
    ]
    ranking = rank_vote(rankings, rank_decay=TTA_RANK_DECAY)
    assert ranking.shape[0] == 1000 and len(ids) == ranking.lengths().max()
    back = load_arrays(save_arrays(tmp_path / "p.npz", predictions))
    assert all(np.array_equal(back[k], v) for k, v in predictions.items())
    path = T.write_submission(tmp_path, [predictions, back], [0.5, 0.5], rank_decay=4.0)
    assert kaggle_csv.validate(path, T.required_ids(data, "test")) == []
    scores = kaggle_csv.evaluate(path, root)
    assert scores["segment_map"] == pytest.approx(segment_map(read_kaggle_csv(path), data.truth()))
    assert read_kaggle_csv(path) == ranking.to_submission(ids)  # two equal lists vote for their own order


def test_validate_names_every_format_problem(tmp_path):
    required = [3, 5, 9]
    good = tmp_path / "good.csv"
    write_kaggle_csv(good, {3: ["Ab12:0", "Cd34:5"], 5: [], 9: ["Ab12:10"]})
    assert kaggle_csv.validate(good, required) == []
    bad = tmp_path / "bad.csv"
    bad.write_text("3,Ab12:0 Ab12:0 Cd34:7 nocolon\n3,Ab12:5\n4,Ab12:5\nx,y\n")
    problems = " | ".join(kaggle_csv.validate(bad, required))
    for expected in ("header 'Class,Segments'", "more than once", "'Cd34:7' is not", "class 3 appears twice",
                     "class 4 is not in the rated class list", "line 4: expected", "2 rated class(es) missing, e.g. 5"):  # fmt: skip
        assert expected in problems, expected
    long = tmp_path / "long.csv"
    long.write_text("Class,Segments\n3," + " ".join(f"v{i}:0" for i in range(100_001)) + "\n5,\n9,\n")
    assert "100001 segments, more than 100000" in kaggle_csv.validate(long, required)[0]


def test_validate_and_evaluate_cli_for_segment_and_video_level_predictions(data, root, tmp_path, capsys):
    classes = kaggle_csv.required_ids(data_dir=root)
    good = tmp_path / "sub.csv"
    write_kaggle_csv(good, {c: [] for c in classes})
    assert main(["validate", "yt8m", str(good), "--data-dir", str(root)]) == 0
    assert json.loads(capsys.readouterr().out)["required_ids"] == 1000
    write_kaggle_csv(good, {c: [] for c in classes[1:]})
    assert main(["validate", "yt8m", str(good), "--data-dir", str(root)]) == 1
    capsys.readouterr()
    meta = data.store("validate").meta
    labels = np.zeros((len(meta), 3862), np.float32)
    for i, m in enumerate(meta):
        labels[i, m["labels"]] = 1.0
    np.savez(tmp_path / "videos.npz", ids=np.array([m["id"] for m in meta]), predictions=labels)
    assert main(["evaluate", "yt8m", "--pred", str(tmp_path / "videos.npz"), "--truth", str(root)]) == 0
    perfect = json.loads(capsys.readouterr().out)
    assert perfect["gap"] == pytest.approx(1.0) and perfect["map"] == pytest.approx(1.0)
    assert perfect["hit_at_1"] == 1.0 and perfect["perr"] == 1.0 and perfect["videos_missing"] == 0
    rows = [f"{m['id']},{' '.join(f'{c} 0.5' for c in m['labels'][:1])}" for m in meta[1:]]
    (tmp_path / "videos.csv").write_text("VideoId,LabelConfidencePairs\n" + "\n".join(rows) + "\n")
    assert main(["evaluate", "yt8m", "--pred", str(tmp_path / "videos.csv"), "--truth", str(root)]) == 0
    partial = json.loads(capsys.readouterr().out)
    assert partial["videos_missing"] == 1 and 0 < partial["gap"] < 1


def test_the_ensemble_searches_the_rank_decay_unless_it_is_fixed():
    assert T.ensemble_search_space({}) == {"rank_decay": (0.0, 10.0)}
    assert T.ensemble_search_space({"rank_decay": 6.0584}) == {}
    with pytest.raises(ValueError, match="yt8m takes rank_decay"):
        T.ensemble_search_space({"w0": 3})
