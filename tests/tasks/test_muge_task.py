"""Task `muge` wiring: chunked retrieval equals the full-matrix reference, the ensemble is the weighted sum
of similarity matrices, submissions validate, accumulation, the logit-scale clamp after each optimiser step,
online learning reads only the cache, folds and options are checked."""

import json
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vmmlib.data.image_transforms import EvalTransform
from vmmlib.data.muge import reader as D
from vmmlib.data.muge.online_cache import cache_path, load_cache
from vmmlib.io.feature_jsonl import read_features
from vmmlib.metrics import muge as M
from vmmlib.predict.online import online_adapt
from vmmlib.submissions import muge as jsonl
from vmmlib.tasks import get_task

T = get_task("muge")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = T.make_sample(tmp_path_factory.mktemp("muge") / "data", train_texts=40, valid_texts=16, test_texts=6,
                         distractors=6, image_size=32, seed=1)  # fmt: skip
    return T.load(root, context_length=16, image_size=32, use_augment=False)


@pytest.fixture()
def net(data):
    torch.manual_seed(0)
    return T.build_model(data, "cnclip_vitb16_tiny", {"patch_size": 16}, "")


def _unit(rng, n, e=8):
    x = rng.normal(size=(n, e)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_chunked_top_k_and_ranks_equal_the_full_matrix_reference_with_ties():
    rng = np.random.default_rng(0)
    texts, images = _unit(rng, 37), _unit(rng, 300)
    images[150] = images[3]  # a tie: the earlier column ranks first
    sim = texts @ images.T
    reference = np.argsort(-sim, axis=1, kind="stable")[:, :10]
    ranking = M.similarity_top_k(texts, images, 10, chunk=7)
    np.testing.assert_array_equal(ranking.index, reference)
    positives = [[int(rng.integers(300))] for _ in range(37)]
    np.testing.assert_array_equal(
        M.feature_ranks(texts, images, positives, chunk=5), M.gallery_ranks(sim, positives)
    )


def _oof(rng, text_ids, image_ids, order=None):
    t, i = _unit(rng, len(text_ids)), _unit(rng, len(image_ids))
    oof = {
        "text_ids": np.asarray(text_ids),
        "text_features": t,
        "image_ids": np.asarray(image_ids),
        "image_features": i,
    }
    if order is not None:  # the same predictions with the images listed in another order
        oof["image_ids"], oof["image_features"] = oof["image_ids"][order], i[order]
    return oof


def test_the_ensemble_scores_the_weighted_sum_of_similarity_matrices_like_the_official_evaluator(tmp_path):
    rng = np.random.default_rng(1)
    text_ids, image_ids = list(range(100, 130)), list(range(500, 560))
    rows = [{"text_id": q, "text": "x", "image_ids": [int(rng.choice(image_ids))]} for q in text_ids]
    data = SimpleNamespace(texts=lambda split: rows)
    a = _oof(rng, text_ids, image_ids)
    b = _oof(rng, text_ids, image_ids)
    b_shuffled = {**b, "image_ids": b["image_ids"][::-1], "image_features": b["image_features"][::-1]}
    weights = [0.3, 1.25]
    sim = 0.3 * a["text_features"] @ a["image_features"].T + 1.25 * b["text_features"] @ b["image_features"].T
    top10 = np.argsort(-sim, axis=1, kind="stable")[:, :10]
    predictions = {q: [image_ids[j] for j in row] for q, row in zip(text_ids, top10)}
    expected = M.recall_at_k(predictions, {r["text_id"]: r["image_ids"] for r in rows})["mean_recall"]
    assert T.oof_scorer([a, b_shuffled], data)(weights) == pytest.approx(expected)
    path = T.write_submission(tmp_path, [a, b_shuffled], weights, keys="query_id")
    assert jsonl.validate(path, text_ids) == []
    first = json.loads(path.read_text().splitlines()[0])
    assert first == {"query_id": 100, "item_ids": predictions[100]}
    # the ensemble's features in Chinese-CLIP's layout: their plain product ranks the same top 10
    key_t, t_ids, t_feat = read_features(tmp_path / "test_texts.txt_feat.jsonl")
    key_i, i_ids, i_feat = read_features(tmp_path / "test_imgs.img_feat.jsonl")
    assert (key_t, key_i, t_ids) == ("text_id", "image_id", text_ids) and t_feat.shape == (30, 16)
    assert i_ids == image_ids
    np.testing.assert_allclose(t_feat @ i_feat.T, sim, rtol=1e-5, atol=1e-6)  # the weighted sum
    ranked = np.argsort(-(t_feat @ i_feat.T), axis=1, kind="stable")[:, :10]
    assert {q: [i_ids[j] for j in row] for q, row in zip(t_ids, ranked)} == predictions
    rank = T.oof_scorer([a, b], data, combine="rank")
    assert 0 <= rank([1.0, 1.0], rank_decay=2.0) <= 1
    assert T.ensemble_search_space({"combine": "rank"}) == {"rank_decay": (0.0, 10.0)}
    assert T.ensemble_search_space({"combine": "similarity"}) == {}
    with pytest.raises(ValueError, match="combine, rank_decay"):
        T.ensemble_search_space({"decay": 1})


def test_accumulated_objective_gives_the_whole_batch_gradients(data, net):
    batch = D.collate([data.pairs("train", train=False)[i] for i in range(8)])
    net.eval()  # no dropout: one pass and four chunks see the same network
    whole = T.finetune_objective(data, ("contrastive",))
    loss = whole(net, batch)["contrastive"]
    loss.backward()
    reference = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    net.zero_grad()
    chunked = T.finetune_objective(data, ("contrastive",), accumulate=4)
    assert chunked.backward_inside
    terms = chunked(net, batch, backward=lambda x: x.backward())
    assert terms["contrastive"].item() == pytest.approx(loss.item(), rel=1e-5)
    for name, grad in reference.items():
        torch.testing.assert_close(dict(net.named_parameters())[name].grad, grad, rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="divide"):
        T.finetune_objective(data, ("contrastive",), accumulate=3)(net, batch)


def test_online_learning_changes_the_model_only_through_the_cache(data, net, tmp_path):
    val_idx = np.arange(len(data.texts("valid")))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        oof = T.predict_fold(net, data, val_idx, 0, online_cache="online_cache", online_lr=1e-3, online_epochs=1,
                             online_batch_size=8)  # fmt: skip
    assert any("broken" in str(w.message) for w in caught)  # the sample's truncated entry is reported
    offline = T.predict_fold(net, data, val_idx, 0)  # the model passed in is untouched
    np.testing.assert_allclose(oof["offline_text_features"], offline["text_features"], atol=1e-6)
    assert not np.allclose(oof["text_features"], offline["text_features"])
    used, missing, broken = oof["online_cache_counts"]
    assert broken == 1 and used + missing + broken >= len(set(r["text"] for r in data.texts("valid")))
    # the same adaptation from the query texts and the cache alone: no gallery image, no ground truth
    queries = data.queries("valid")
    ids, mask = D.tokenize(data.tokenizer, queries.texts, data.context_length)
    cache = data.data_dir / "online_cache" / "valid"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        adapted, report = online_adapt(net, queries.texts, torch.from_numpy(ids), torch.from_numpy(mask), cache,
                                       EvalTransform(32), lr=1e-3, epochs=1, batch_size=8)  # fmt: skip
    np.testing.assert_allclose(
        T.predict_fold(adapted, data, val_idx, 0)["text_features"], oof["text_features"], atol=1e-5
    )
    # another cache image changes the result; an empty cache changes nothing
    other = tmp_path / "cache"
    shutil.copytree(cache, other)
    target = cache_path(other, report_text(queries.texts, cache))
    target.write_bytes(cache_path(cache, queries.texts[-1]).read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        changed, _ = online_adapt(net, queries.texts, torch.from_numpy(ids), torch.from_numpy(mask), other,
                                  EvalTransform(32), lr=1e-3, epochs=1, batch_size=8)  # fmt: skip
        empty, report = online_adapt(net, queries.texts, torch.from_numpy(ids), torch.from_numpy(mask), tmp_path,
                                     EvalTransform(32), lr=1e-3, epochs=1, batch_size=8)  # fmt: skip
    assert not torch.equal(changed.text_projection.weight, adapted.text_projection.weight)
    assert report.used == 0 and len(report.missing) == len(queries.texts)
    assert all(torch.equal(p, q) for p, q in zip(empty.parameters(), net.parameters()))


def report_text(texts, cache):
    """A query whose cache entry is usable (its image is replaced in the copy)."""
    images, _ = load_cache(cache, texts, lambda im: im.size, warn=False)
    return next(t for t, im in zip(texts, images) if im is not None and t != texts[-1])


def test_predictions_submission_folds_and_options(data, net, tmp_path):
    prediction = T.predict([net, net], data, "test")
    assert prediction["text_features"].shape == (6, 2 * 64) and len(prediction["image_ids"]) > 6
    single = T.predict([net], data, "test")
    sim2 = prediction["text_features"] @ prediction["image_features"].T
    np.testing.assert_allclose(sim2, single["text_features"] @ single["image_features"].T, atol=1e-5)
    path = T.write_submission(tmp_path, [prediction], [1.0])
    assert jsonl.validate(path, T.required_ids(data, "test")) == []
    with pytest.raises(ValueError, match="one fold"):
        T.finetune_datasets(data, 5, 0)
    with pytest.raises(ValueError, match="image_size"):
        T.build_model(data, "cnclip_vitb16_tiny", {"image_size": 64}, "")
    with pytest.raises(ValueError, match="one fold"):
        T.merge_oof([prediction, prediction])
    report = T.explore(data.data_dir, progress=False)
    assert set(report.splits["split"]) == {"train", "valid", "test"} and report.targets.min() >= 1
    assert (T.fold_table(T.predict_fold(net, data, np.arange(4), 0), data)["rank"] >= 1).all()


def test_a_folder_without_vocab_loads_but_refuses_to_tokenise(data, tmp_path):
    bare = T.load(tmp_path)  # 40_ensemble opens the folder without options and tokenises nothing
    with pytest.raises(FileNotFoundError, match="vocab_path"):
        bare.text_tokenizer()
    with pytest.raises(FileNotFoundError, match="vmm prepare muge"):
        T.load(data.data_dir, lmdb_dir=tmp_path / "none").gallery("valid")


def test_vmm_prepare_muge_prints_its_summary(data, capsys):
    from vmmlib.app.cli import main

    assert main(["prepare", "muge", str(data.data_dir), "--splits", "valid", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["valid"]["images"] == data.store("valid").num_images and summary["valid"]["problems"] == 0


def test_fit_clamps_the_logit_scale_after_every_optimiser_step(data, net, tmp_path):
    from vmmlib.train.loop import fit, make_loader

    contrastive = T.finetune_objective(data, ("contrastive",))
    seen = []

    def pushed_up(model, batch):  # a loss that drives the scale up as hard as it can
        seen.append(getattr(model, "module", model).logit_scale.item())
        return {"contrastive": contrastive(model, batch)["contrastive"] - 100 * model.logit_scale}

    with torch.no_grad():
        net.logit_scale.fill_(np.log(100) - 0.1)
    loader = make_loader(data.pairs("train", train=False), 8, shuffle=True, seed=0)
    fit(net, loader, pushed_up, steps=4, lr=0.3, out_dir=tmp_path, progress=False)
    assert seen[0] == pytest.approx(np.log(100) - 0.1) and seen[1:] == [pytest.approx(np.log(100))] * 3
    assert net.logit_scale.item() == pytest.approx(np.log(100))


def test_chinese_clips_own_top_k_script_ranks_the_written_features_into_the_submission(tmp_path, monkeypatch):
    """`cn_clip/eval/make_topk_predictions.py` (run as its `__main__`, on CPU: `.cuda()` made a no-op)
    reads the ensemble's feature files and writes the same top 10 as `write_submission`."""
    import runpy
    import sys

    cn_clip = pytest.importorskip("cn_clip")
    rng = np.random.default_rng(4)
    text_ids, image_ids = list(range(10, 40)), list(range(700, 780))
    preds = [_oof(rng, text_ids, image_ids), _oof(rng, text_ids, image_ids)]
    ours = jsonl.read(T.write_submission(tmp_path, preds, [0.7, 0.4]))
    script = Path(cn_clip.__file__).parent / "eval" / "make_topk_predictions.py"
    out = tmp_path / "cn_clip_predictions.jsonl"
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)
    monkeypatch.setattr(sys, "argv", [str(script), "--image-feats", str(tmp_path / "test_imgs.img_feat.jsonl"),
                                      "--text-feats", str(tmp_path / "test_texts.txt_feat.jsonl"),
                                      "--output", str(out)])  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runpy.run_path(str(script), run_name="__main__")
    assert jsonl.read(out) == ours and len(ours) == 30
