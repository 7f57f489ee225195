"""Task `muge`: Chinese text → image retrieval (MUGE; seed 002, Online-CNCLIP on Chinese-CLIP).

Data: `{split}_imgs.tsv` + `{split}_texts.jsonl` prepared into Chinese-CLIP's LMDB layout
(`vmm prepare muge DATA_DIR`, `vmmlib.data.muge.prepare`); readers, tokenisation and batches in
`vmmlib.data.muge.reader`; sample data `vmmlib.data.muge.sample` (raw files, the prepared LMDB and an
online-learning cache). Model: the CLIP dual encoder `vmmlib.models.clip_dual` (`cnclip_vitb16`,
`cnclip_vitb16_tiny`). Training: the symmetric contrastive loss over the gathered batch
(`vmmlib.objectives.contrastive`), optionally accumulated over chunks with cached features (`{"accumulate": 8}`:
8 chunks give the negatives of the whole batch) or Online-CNCLIP's prior-reweighted loss.

Metric: `mean_recall` = (R@1 + R@5 + R@10) / 3 of text → image retrieval over the **whole validation
gallery**, as a fraction, in the official evaluator's semantics (a query hits at K when any of its
images is in its first K; ties: the earlier gallery image first). Image → text (the evaluator's
transposed annotation: every image some query points to) is reported apart (`i2t_*`), and so is
the in-batch accuracy Chinese-CLIP logs as its validation (`*_in_batch_acc`, not recall).

Folds: training reads the train split; there is one fold, `n_folds=1, fold=0`, whose held-out
items are the valid split's queries (`val_idx` = their rows in `valid_texts.jsonl`), ranked
against every valid image. Predictions are features: text ids (Q,), text features (Q, E), image ids
(G,), image features (G, E); rankings are computed from them by chunked exact products
(`vmmlib.metrics.muge.similarity_top_k`, bounded memory for 100k+ galleries). Several fold models'
features are concatenated with the query side scaled by 1/F, so one product gives the mean of
their similarity matrices; the ensemble does the same with the model weights (Online-CNCLIP's
weighted sum of similarity matrices), or merges the models' top lists by rank vote.

Online learning (`predict_options={"online_cache": DIR, ...}`, `vmmlib.predict.online`): before scoring a
split, a copy of the model takes one AdamW step per batch of queries on the (cached image, query
text) pairs of `DIR/<split>/<query>/1.jpg` for `online_epochs` rounds; out-of-fold predictions then
also keep the offline features (`offline_*`), so both figures are reported.

The logit-scale clamp ([0, ln 100] after every optimiser step, as Chinese-CLIP) is the model's
`after_optimizer_step`, which `fit` calls after each step.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from vmmlib.data.image_transforms import EvalTransform
from vmmlib.data.muge import reader as D
from vmmlib.data.muge.prepare import prepare_muge, split_files, summary_dict
from vmmlib.data.muge.reader import MugeData, load  # noqa: F401 (the notebooks call T.load)
from vmmlib.data.muge.sample import write_muge_sample
from vmmlib.explore import Split, Summary
from vmmlib.metrics import muge as M
from vmmlib.objectives import contrastive as C
from vmmlib.objectives.compose import objective_of
from vmmlib.options import call_with_options, check_choice
from vmmlib.plots import plot_rank_recalls as plot_fold  # noqa: F401 (the contract name)
from vmmlib.predict.loop import predict_batches
from vmmlib.predict.online import OnlineOptions
from vmmlib.ranking import TTA_RANK_DECAY, Ranking, rank_vote

NAME = "muge"
METRIC = "mean_recall"  # also the pretraining metric: the best validation mean recall is kept
PRETRAIN_TERMS = FINETUNE_TERMS = ("contrastive",)
BACKBONE_PREFIXES = ("visual.", "text.")  # the ViT and BERT towers; projections and logit scale at `lr`
COMBINE = ("similarity", "rank")


# --- sample data, explore ------------------------------------------------------------------------


def make_sample(out_dir: str | Path, *, prepare: bool = True, **options) -> Path:
    """Write sample data in the raw layout (`write_muge_sample` options) and, with `prepare`, build its
    LMDB as `vmm prepare muge` does."""
    out = call_with_options(write_muge_sample, out_dir, options=options, what="sample option")
    if prepare:
        prepare_muge(out, progress=False)
    return out


def prepare(data_dir: str | Path, **options) -> dict:
    """`vmm prepare muge DATA_DIR`: the TSV + JSONL files into Chinese-CLIP's LMDB layout (`prepare_muge`
    options); a JSON-ready summary per split."""
    summaries = call_with_options(prepare_muge, data_dir, options=options, what="prepare option")
    return {split: summary_dict(s) for split, s in summaries.items()}


def summarize(data_dir: Path) -> Summary:
    """A MUGE folder for `explore`: queries per split (text length, images per query), the images
    queries point to (long tail), the labelled queries' last two characters (the product word of
    MUGE's shopping queries: a rough category), examples."""
    per_image, prefixes = Counter(), Counter()

    def read(split: str, q: dict) -> tuple[dict, dict]:
        per_image.update(q["image_ids"])
        prefixes.update([q["text"][-2:]] if split != "test" else [])
        return (
            {
                "id": q["text_id"],
                "text_len": len(q["text"]),
                "positives": len(q["image_ids"]),
                "num_frames": 1,
            },
            {"text_id": q["text_id"], "text": q["text"], "image_ids": q["image_ids"][:5]},
        )

    def finish(items: pd.DataFrame, splits: pd.DataFrame) -> dict:
        if items.empty:
            raise FileNotFoundError(f"{data_dir} holds no {{train,valid,test}}_texts.jsonl")
        labelled = items[items["split"] != "test"]
        return {"label_counts": pd.Series(per_image, name="queries", dtype=int) if per_image else pd.Series([0]),
                "category_counts": pd.Series(prefixes, name="queries", dtype=int),
                "targets": labelled["positives"].astype(float).rename("images per query"),
                "target_name": "images per query"}  # fmt: skip

    splits = []
    for split in D.SPLITS:
        images, texts = split_files(data_dir, split)
        if texts.is_file():
            n_images = sum(1 for line in images.open("rb") if line.strip()) if images.is_file() else 0
            splits.append(Split(split, int(images.is_file()) + 1, D.read_texts(texts), {"images": n_images}))
    return Summary(splits, read, finish, ["text_len", "positives"])


# --- objectives ---------------------------------------------------------------------------------


def finetune_objective(data: MugeData, terms: tuple[str, ...], *, accumulate: int = 1,
                       prior_tau: float | None = None, gather: bool = True,
                       gather_with_grad: bool = False):  # fmt: skip
    """The symmetric contrastive loss of the batch's (image, text) pairs over every process's batch.

    Args:
        terms: ("contrastive",).
        accumulate: split each batch into this many chunks and accumulate with cached features
            (`vmmlib.objectives.contrastive.clip_terms`): the loss and gradients of the whole batch,
            one chunk's activations in memory. The objective then runs its own backward passes
            (`backward_inside`); called without `backward` it uses `loss.backward()` and returns a
            term whose own gradient is zero.
        prior_tau: Online-CNCLIP's prior-reweighted loss at this temperature (the seed's 1000).
        gather, gather_with_grad: Chinese-CLIP's feature gathering (`vmmlib.objectives.contrastive.clip_loss`).
    """
    check_choice("term", "contrastive", terms)  # the only term
    if int(accumulate) < 1:
        raise ValueError(f"accumulate must be >= 1, got {accumulate}")
    objective = objective_of(C.clip_terms, accumulate=int(accumulate), gather=gather,
                             gather_with_grad=gather_with_grad, prior_tau=prior_tau)  # fmt: skip
    objective.backward_inside = int(accumulate) > 1  # type: ignore[attr-defined]
    return objective


def pretrain_objective(data: MugeData, terms: tuple[str, ...], **options):
    """Contrastive pretraining on the train pairs: the same loss and options as `finetune_objective`."""
    return finetune_objective(data, terms, **options)


def pretrain_dataset(data: MugeData):
    """The train split's (image, text) pairs with the training transform."""
    return data.pairs("train", train=True)


def finetune_datasets(data: MugeData, n_folds: int, fold: int):
    """(train pairs, the valid queries' rows): MUGE has one fold, its valid split (n_folds=1, fold=0)."""
    if n_folds != 1 or fold != 0:
        raise ValueError(f"muge has one fold (the valid split): use n_folds=1, fold=0, got {n_folds}, {fold}")
    return data.pairs("train", train=True), np.arange(len(data.texts("valid")))


# --- features, evaluation -----------------------------------------------------------------------


def _ids(values) -> np.ndarray:
    values = list(values)
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return np.asarray(values, np.int64)
    return np.asarray([str(v) for v in values])


def _text_features(model, queries, batch_size: int = 256) -> np.ndarray:
    step = lambda m, b: m(text_ids=b["text_ids"], text_mask=b["text_mask"])["text_features"]  # noqa: E731
    out = [f for _, f in predict_batches(model, queries, step, batch_size=batch_size, collate_fn=D.collate)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _image_features(model, gallery, batch_size: int = 64) -> np.ndarray:
    step = lambda m, b: m(frames=b["frames"], frame_mask=b["frame_mask"])["image_features"]  # noqa: E731
    out = [f for _, f in predict_batches(model, gallery, step, batch_size=batch_size, collate_fn=D.collate)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def finetune_eval(data: MugeData, val_idx: np.ndarray, *, batch_size: int = 128):
    """Mean recall (text → image over the whole valid gallery), R@K, image → text, in-batch accuracy."""
    queries = data.queries("valid", val_idx)
    gallery = data.gallery("valid")
    truth = queries.image_ids

    def eval_fn(model) -> dict:
        texts, images = _text_features(model, queries), _image_features(model, gallery)
        scores = M.retrieval_scores(texts, images, truth, gallery.image_ids)
        return {**scores, **M.batched_in_batch_accuracy(texts, images, truth, gallery.image_ids, batch_size)}

    return eval_fn


def pretrain_eval(data: MugeData):
    """`finetune_eval` on every valid query."""
    return finetune_eval(data, np.arange(len(data.texts("valid"))))


# --- predictions: features (and online learning) -------------------------------------------------


def _split_features(model, data: MugeData, split: str, rows, online: OnlineOptions) -> dict:
    """{text_features, image_features} of a split's queries (`rows`) and gallery, after online
    adaptation when `online.cache` is set (then also `offline_*`, and the cache counts)."""
    queries, gallery = data.queries(split, rows), data.gallery(split)
    out = {"text_features": _text_features(model, queries), "image_features": _image_features(model, gallery)}
    if not online.cache:
        return out
    ids, mask = (torch.from_numpy(a) for a in D.tokenize(data.tokenizer, queries.texts, data.context_length))
    root = online.root(data.data_dir, split)
    adapted, counts = online.adapt(model, queries.texts, ids, mask, root, EvalTransform(data.image_size))
    return {"text_features": _text_features(adapted, queries), "image_features": _image_features(adapted, gallery),
            "offline_text_features": out["text_features"], "offline_image_features": out["image_features"],
            "online_cache_counts": counts}  # fmt: skip


def predict_fold(model, data: MugeData, val_idx: np.ndarray, fold: int, *, online_cache: str = "",
                 online_lr: float = 0.75e-5, online_epochs: int = 1, online_batch_size: int = 128,
                 online_prior_tau: float | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """Features of the held-out valid queries and of the whole valid gallery.

    Args:
        online_cache: a cache root holding `valid/<query>/1.jpg` (relative: to the data folder);
            "" predicts offline. online_lr, online_epochs, online_batch_size, online_prior_tau:
            `vmmlib.predict.online.online_adapt` (the seed validates with 1 round).

    Returns:
        {text_ids (Q,), text_features (Q, E), image_ids (G,), image_features (G, E), fold (Q,)}, and
        with online learning `offline_text_features`, `offline_image_features`, `online_cache_counts`
        (used, missing, broken).
    """
    online = OnlineOptions(online_cache, online_lr, online_epochs, online_batch_size, online_prior_tau)
    queries = data.queries("valid", val_idx)
    features = _split_features(model, data, "valid", val_idx, online)
    return {"text_ids": _ids(queries.text_ids), "image_ids": _ids(data.gallery("valid").image_ids), **features,
            "fold": np.full(len(queries), fold, np.int64)}  # fmt: skip


def predict(models: list, data: MugeData, split: str, *, online_cache: str = "", online_lr: float = 0.75e-5,
            online_epochs: int = 1, online_batch_size: int = 128,
            online_prior_tau: float | None = None) -> dict[str, np.ndarray]:  # fmt: skip
    """Features of a split's queries and gallery by a model's fold models, each adapted online first
    when `online_cache` is set (the seed's test-time `max_epochs` = `online_epochs`). Fold models are
    merged by concatenating their features, the text side scaled by 1/F: one product then gives the
    mean of the folds' similarity matrices.

    Returns:
        {text_ids (Q,), text_features (Q, F·E), image_ids (G,), image_features (G, F·E)}.
    """
    online = OnlineOptions(online_cache, online_lr, online_epochs, online_batch_size, online_prior_tau)
    parts = [_split_features(m, data, split, None, online) for m in models]
    return {
        "text_ids": _ids(data.queries(split).text_ids),
        "text_features": np.concatenate([p["text_features"] / len(parts) for p in parts], 1),
        "image_ids": _ids(data.gallery(split).image_ids),
        "image_features": np.concatenate([p["image_features"] for p in parts], 1),
    }


def merge_oof(parts: list[dict]) -> dict[str, np.ndarray]:
    """The one fold's out-of-fold features (muge has one fold: the valid split)."""
    if len(parts) != 1:
        raise ValueError(f"muge has one fold (the valid split); got {len(parts)} fold results")
    return parts[0]


# --- out-of-fold scores, ensemble, submission --------------------------------------------------


def _aligned(arrays: list[dict], side: str) -> list[np.ndarray]:
    """Each prediction's `{side}_features` rows in the first prediction's `{side}_ids` order."""
    from vmmlib.ensemble import align_rows

    try:
        rows = align_rows([a[f"{side}_ids"].tolist() for a in arrays])
    except KeyError as e:
        raise ValueError(f"the models' predictions hold different {side} ids: {e.args[0]}") from None
    return [np.asarray(a[f"{side}_features"])[r] for a, r in zip(arrays, rows)]


def combine(predictions: list[dict], weights, *, combine: str = "similarity",
            rank_decay: float = TTA_RANK_DECAY, rank_depth: int = 100) -> dict:  # fmt: skip
    """The weighted ensemble (text and image ids of `predictions[0]`). `combine="similarity"`: the
    weighted sum Σ w_m T_m I_mᵀ of the models' similarity matrices (Online-CNCLIP's 8-model ensemble)
    as one pair of features — each model's side by side, the query side scaled by its weight;
    `"rank"`: each model's top-`rank_depth` list merged by the rank vote w_m · w0 / (i + w0)
    (`vmmlib.ranking.rank_vote`), top 10 kept (`top_index`, `top_score`)."""
    check_choice("combine", combine, COMBINE)
    texts, images = _aligned(predictions, "text"), _aligned(predictions, "image")
    ids = {k: predictions[0][k] for k in ("text_ids", "image_ids")}
    if combine == "similarity":
        q = np.concatenate([float(w) * t for w, t in zip(weights, texts)], 1)
        return {**ids, "text_features": q, "image_features": np.concatenate(images, 1)}
    query_ids = predictions[0]["text_ids"]
    rankings = [M.similarity_top_k(t, i, rank_depth, query_ids=query_ids) for t, i in zip(texts, images)]
    vote = rank_vote(rankings, weights, rank_decay=rank_decay, top_k=10)
    return {**ids, "top_index": vote.index, "top_score": vote.score}


def score_oof(oof: dict, data: MugeData) -> float:
    """Valid text→image mean recall: over the whole gallery by chunked feature products, or (a rank
    ensemble's `top_index`) of the top 10 by the official evaluator's recall."""
    truth = _truth(oof, data)
    if "top_index" in oof:
        vote = Ranking(oof["text_ids"], oof["top_index"], oof["top_score"])
        return M.recall_at_k(
            vote.to_submission(oof["image_ids"]), dict(zip(oof["text_ids"].tolist(), truth))
        )["mean_recall"]
    t2i = M.positive_columns(truth, oof["image_ids"])[0]
    return M.recall_from_ranks(M.feature_ranks(oof["text_features"], oof["image_features"], t2i))[
        "mean_recall"
    ]


def _truth(oof: dict, data: MugeData) -> list[list]:
    truth_of = {r["text_id"]: r["image_ids"] for r in data.texts("valid")}
    return [truth_of[q] for q in oof["text_ids"].tolist()]


def oof_breakdown(oof: dict, data: MugeData) -> dict[str, float]:
    """R@1/5/10 text → image (`t2i_r*`), image → text (`i2t` mean recall, `i2t_r*`), and, for online
    predictions, the offline features' scores (`offline`, `offline_i2t`)."""
    truth = _truth(oof, data)
    scores = M.retrieval_scores(oof["text_features"], oof["image_features"], truth, oof["image_ids"])
    out = {f"t2i_r{k}": scores[f"r{k}"] for k in M.KS}
    out["i2t"] = scores["i2t_mean_recall"]
    out.update({f"i2t_r{k}": scores[f"i2t_r{k}"] for k in M.KS})
    if "offline_text_features" in oof:
        off = M.retrieval_scores(
            oof["offline_text_features"], oof["offline_image_features"], truth, oof["image_ids"]
        )
        out.update(offline=off["mean_recall"], offline_i2t=off["i2t_mean_recall"])
    return out


def fold_table(oof: dict, data: MugeData) -> pd.DataFrame:
    """Per valid query: text, positives, the 1-based rank of its best image (online and offline)."""
    truth = _truth(oof, data)
    t2i = M.positive_columns(truth, oof["image_ids"])[0]
    text_of = {r["text_id"]: r["text"] for r in data.texts("valid")}
    table = pd.DataFrame({"text_id": oof["text_ids"], "text": [text_of[q] for q in oof["text_ids"].tolist()],
                          "positives": [len(t) for t in truth],
                          "rank": M.feature_ranks(oof["text_features"], oof["image_features"], t2i) + 1})  # fmt: skip
    if "offline_text_features" in oof:
        table["offline_rank"] = (
            M.feature_ranks(oof["offline_text_features"], oof["offline_image_features"], t2i) + 1
        )
    return table


ENSEMBLE_OPTIONS = ("combine", "rank_decay", "rank_depth", "keys")


def ensemble_search_space(options: dict) -> dict[str, tuple[float, float]]:
    """Searched besides the model weights: the rank decay w0 in [0, 10] when `combine="rank"` and w0
    is not fixed; nothing for the similarity sum."""
    unknown = sorted(set(options) - set(ENSEMBLE_OPTIONS))
    if unknown:
        raise ValueError(
            f"unknown ensemble option(s) {', '.join(unknown)}; muge takes {', '.join(ENSEMBLE_OPTIONS)}"
        )
    check_choice("combine", options.get("combine", "similarity"), COMBINE)
    if options.get("combine") == "rank" and "rank_decay" not in options:
        return {"rank_decay": (0.0, 10.0)}
    return {}


def write_predictions(out_dir: str | Path, prediction: dict, *, keys: str = "text_id") -> Path:
    """The (ensembled) top 10 images per query written to `test_predictions.jsonl` (`keys`: "text_id"
    Chinese-CLIP, "query_id" Tianchi / Online-CNCLIP).

    Given features (a similarity ensemble), they go beside it in Chinese-CLIP's layout,
    `test_texts.txt_feat.jsonl` and `test_imgs.img_feat.jsonl`, so that their plain product is the
    ensemble's similarity (Chinese-CLIP's `make_topk_predictions.py` ranks them into the same top 10).
    """
    from vmmlib.io.feature_jsonl import feature_file, write_features
    from vmmlib.submissions import muge as jsonl

    image_ids, text_ids = np.asarray(prediction["image_ids"]), prediction["text_ids"].tolist()
    if "top_index" in prediction:
        top = prediction["top_index"]
    else:
        texts, images = prediction["text_features"], prediction["image_features"]
        top = M.similarity_top_k(texts, images, 10, query_ids=prediction["text_ids"]).index
        write_features(feature_file(out_dir, "test", "text_id"), "text_id", text_ids, texts)
        write_features(feature_file(out_dir, "test", "image_id"), "image_id", image_ids.tolist(), images)
    return jsonl.write(Path(out_dir) / "test_predictions.jsonl", text_ids, image_ids[top].tolist(), keys=keys)


def required_ids(data: MugeData, split: str) -> list:
    """The text ids of the split's queries (every one needs a line)."""
    return [r["text_id"] for r in data.texts(split)]
