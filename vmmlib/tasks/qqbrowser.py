"""Task `qqbrowser`: QQ Browser 2021 multimodal video similarity (seed 000).

Data: `vmmlib.data.qqbrowser.reader` (the real layout); sample data: `vmmlib.data.qqbrowser.sample`;
target: tags (pretraining) and pair similarity (fine-tuning); metric: Spearman of cosine vs label.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats
import torch

from vmmlib.data.folds import seed_pair_folds, video_pair_folds
from vmmlib.data.qqbrowser import reader as qq
from vmmlib.data.qqbrowser.reader import QQData, load  # noqa: F401 (the notebooks call T.load)
from vmmlib.explore import Split, Summary, zeros
from vmmlib.io import read_examples
from vmmlib.metrics import qq_spearman
from vmmlib.metrics.qqbrowser import pair_cosine
from vmmlib.objectives import losses as L
from vmmlib.objectives import tagging as TG
from vmmlib.objectives.compose import objective_of
from vmmlib.objectives.masking import TokenSpec
from vmmlib.options import check_choice
from vmmlib.plots import plot_pair_cosines as plot_fold  # noqa: F401 (the contract name)
from vmmlib.predict.loop import predict_all, tensors

NAME = "qqbrowser"  # submission: result.zip, JSON id -> <= 256 float16 values
METRIC = "spearman"  # also the pretraining metric: the best fine-tuning checkpoint is kept
BACKBONE_PREFIXES = ("text.backbone.", "encoder.")  # the pretrained text stacks (lower lr)
PRETRAIN_TERMS = ("tag", "mlm", "nce", "distill")
FINETUNE_TERMS = ("mse", "kl", "tag")


def summarize(data_dir: Path) -> Summary:
    """A QQ Browser folder for `explore`: frames, title/ASR lengths, tags per video, categories (lv1),
    pair relevance."""
    files = qq.check_layout(data_dir)
    tags, tag_counts = qq.TagVocab.read(data_dir / "tag_list.txt"), Counter()

    def read(split: str, record) -> tuple[dict, dict]:
        video = qq.parse_video(record)
        kept = [int(t) for t in video["tag_id"] if t in tags]
        tag_counts.update(kept)
        num_frames = len(video["frames"])
        return (
            {"id": video["id"], "num_frames": num_frames, "title_len": len(video["title"]),
             "asr_len": len(video["asr_text"]), "num_tags": len(kept), "category_id": video["category_id"]},
            {"id": video["id"], "title": video["title"], "asr_text": video["asr_text"][:40],
             "tag_id": list(map(int, video["tag_id"])), "category_id": video["category_id"], "num_frames": num_frames},
        )  # fmt: skip

    def finish(items: pd.DataFrame, splits: pd.DataFrame) -> dict:
        pairs = qq.read_pairs(data_dir / "pairwise" / "label.tsv")
        pair_row = pd.DataFrame([{"split": "pairs (label.tsv)", "files": 1, "items": len(pairs)}])
        labelled = items[items["category_id"] >= 0]
        return {"splits": pd.concat([splits, pair_row], ignore_index=True).fillna(0),
                "label_counts": pd.Series({t: tag_counts.get(int(t), 0) for t in tags.tag_ids}, name="videos"),
                "category_counts": labelled["category_id"].floordiv(100).value_counts().rename("videos"),
                "targets": pairs["relevance"], "target_name": "pair relevance"}  # fmt: skip

    def counts(rows: list[dict]) -> dict:
        return {"no_frames": zeros(rows, "num_frames"), "empty_title": zeros(rows, "title_len")}

    splits = [
        Split(split, len(paths), (r for p in paths for r in read_examples(p, schema=qq.SCHEMA, raw_dtypes=qq.RAW_DTYPES)),
              counts)
        for split, paths in files.items()
    ]  # fmt: skip
    return Summary(splits, read, finish, ["num_frames", "title_len", "asr_len", "num_tags"])


# --- folds (the data folder opened for training: `vmmlib.data.qqbrowser.reader.QQData`) ---------------


FOLD_SCHEMES = ("seed", "video")


def fold_pairs(
    data: QQData,
    n_folds: int,
    fold: int,
    *,
    scheme: str = "seed",
    seed: int = 42,
    fold_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices into `data.pairs`: seed 000's shuffled pair slices, or video-disjoint folds."""
    check_choice("fold scheme", scheme, FOLD_SCHEMES)
    if scheme == "seed":
        return seed_pair_folds(len(data.pairs), n_folds, fold, seed=seed, fold_size=fold_size)
    return video_pair_folds(
        list(data.pairs["query"]), list(data.pairs["candidate"]), n_folds, fold, seed=seed
    )


# --- model and objectives ----------------------------------------------------------------------


def pretrain_objective(data: QQData, terms: tuple[str, ...], *, tag_loss: str = "bce", mlm_prob: float = 0.15,
                       distill_temperature: float = 2.0, nce_temperature: float = 0.07):  # fmt: skip
    """Seed 000's pretraining (`vmmlib.objectives.tagging.tag_pretrain_terms`): tag BCE/ASL (+ each
    MixNeXtVLAD branch's, sharing the tag weight) + MLM (text only) + vision–text InfoNCE + branch
    distillation; the seed weighs tag 1, mlm 10 (UNITER), nce 10 and distill 10 (MixNeXtVLAD)."""
    L.tag_loss_fn(tag_loss)  # an unknown name is refused here, not at the first batch
    tok = data.tokenizer
    special = (tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id, tok.unk_token_id)
    tokens = TokenSpec(len(tok), tok.mask_token_id, special)
    objective = objective_of(TG.tag_pretrain_terms, terms=terms, tokens=tokens, tag_loss=tag_loss, mlm_prob=mlm_prob,
                             distill_temperature=distill_temperature, nce_temperature=nce_temperature)  # fmt: skip
    objective.shares_weight = {"branch_tag": "tag"}
    return objective


def finetune_objective(data: QQData, terms: tuple[str, ...], *, tag_loss: str = "bce"):
    """Seed 000's pair fine-tuning (`vmmlib.objectives.tagging.pair_terms`): Σ (cos − y)², KerasKL(y, cos)
    and the tag loss (SPEC §4.3), raw; the seed weighs them mse 1, kl 0.5, tag 1."""
    L.tag_loss_fn(tag_loss)
    objective = objective_of(TG.pair_terms, tag_loss=tag_loss)
    objective.summed_terms = ("mse", "kl")  # sums over the pairs (seed 000); fit's accumulation weighs them 1
    return objective


# --- evaluation and prediction --------------------------------------------------------------------


def _embedding(model, batch) -> torch.Tensor:
    return model(**tensors(batch))["embedding"]


def embed(models, dataset, *, batch_size: int = 64, progress: bool = False) -> tuple[list[str], np.ndarray]:
    """(ids, float32 (N, 256)): the mean embedding of every video of `dataset` by `models`."""
    return predict_all(
        models, dataset, _embedding, batch_size=batch_size, progress=progress, desc="embedding"
    )


def pair_videos(data: QQData, pair_idx: np.ndarray) -> torch.utils.data.Subset:
    """The pairwise videos that appear in the given pairs (for out-of-fold embeddings)."""
    videos = data.split("pairwise")
    pairs = data.pairs.iloc[np.asarray(pair_idx)]
    rows = sorted({videos.index_of(v) for v in pd.concat([pairs["query"], pairs["candidate"]])})
    return torch.utils.data.Subset(videos, rows)


def spearman_eval(data: QQData, pair_idx: np.ndarray | None = None, *, batch_size: int = 64):
    """An `eval_fn` for `fit`: the official Spearman on the given pairs (all labelled pairs by default)."""
    pair_idx = np.arange(len(data.pairs)) if pair_idx is None else np.asarray(pair_idx)
    subset = pair_videos(data, pair_idx)

    def eval_fn(model) -> dict:
        ids, emb = embed(model, subset, batch_size=batch_size)
        return {METRIC: qq_spearman(dict(zip(ids, emb)), data.pairs.iloc[pair_idx])}

    return eval_fn


def pretrain_dataset(data: QQData) -> qq.VideoDataset:
    """Pretraining videos: the pointwise split (with tags)."""
    return data.split("pointwise")


def pretrain_eval(data: QQData):
    """Seed 000 evaluates pretraining by Spearman on every labelled pair."""
    return spearman_eval(data)


def finetune_datasets(data: QQData, n_folds: int, fold: int, *, scheme: str = "seed", seed: int = 42,
                      fold_size: int | None = None):  # fmt: skip
    """(train PairDataset, validation pair indices) of one fold (`fold_pairs` for the options)."""
    train_idx, val_idx = fold_pairs(data, n_folds, fold, scheme=scheme, seed=seed, fold_size=fold_size)
    return qq.PairDataset(data.split("pairwise"), data.pairs, train_idx), val_idx


def finetune_eval(data: QQData, val_idx: np.ndarray):
    """Validation Spearman of the fold's held-out pairs."""
    return spearman_eval(data, val_idx)


def predict_fold(model, data: QQData, val_idx: np.ndarray, fold: int) -> dict[str, np.ndarray]:
    """The embeddings of both videos of each validation pair: {pair, fold, emb_a, emb_b}."""
    ids, emb = embed(model, pair_videos(data, val_idx))
    row = {v: i for i, v in enumerate(ids)}
    pairs = data.pairs.iloc[val_idx]
    return {
        "pair": np.asarray(val_idx),
        "fold": np.full(len(val_idx), fold),
        "emb_a": emb[[row[v] for v in pairs["query"]]],
        "emb_b": emb[[row[v] for v in pairs["candidate"]]],
    }


def fold_table(oof: dict[str, np.ndarray], data: QQData) -> pd.DataFrame:
    """DataFrame(query, candidate, relevance, pair, fold, cosine) of out-of-fold pairs."""
    pairs = data.pairs.iloc[oof["pair"]]
    return pairs.assign(pair=oof["pair"], fold=oof["fold"], cosine=pair_cosine(oof["emb_a"], oof["emb_b"]))


def score_oof(oof: dict, data: QQData) -> float:
    """Spearman over all out-of-fold pairs of the pair cosine of the (ensembled) embeddings."""
    relevance = data.pairs["relevance"].to_numpy()[oof["pair"]]
    return float(scipy.stats.spearmanr(pair_cosine(oof["emb_a"], oof["emb_b"]), relevance).correlation)


def predict(models: list, data: QQData, split: str, *, average: str = "raw", progress: bool = True):
    """Embed a split with a model's fold models and average over folds: {ids, embedding (N, 256)}.

    Args:
        average: `raw` — the mean of the un-normalised fold embeddings (seed 000's `ensemble_final`);
            `normalized` — L2-normalise each fold's embeddings first, so no fold dominates by scale.
    """
    check_choice("fold average", average, ("raw", "normalized"))

    def step(model, batch):
        emb = _embedding(model, batch).float()
        return emb / emb.norm(dim=1, keepdim=True).clamp_min(1e-12) if average == "normalized" else emb

    ids, emb = predict_all(models, data.split(split), step, progress=progress, desc=f"folds → {split}")
    return {"ids": np.asarray(ids, dtype=str), "embedding": emb}


# --- ensemble and submission ---------------------------------------------------------------------


def combine(predictions: list[dict], weights) -> dict:
    """Σ_m w_m e_m, the weighted sum of the models' embeddings of each video (as the seed's
    `ensemble_final` sums fold-averaged embeddings): out-of-fold pairs aligned by pair, test
    embeddings by video id."""
    from vmmlib.ensemble import weighted_arrays

    if "pair" in predictions[0]:
        return weighted_arrays(predictions, weights, "pair", ("emb_a", "emb_b"), what="out-of-fold pairs")
    return weighted_arrays(predictions, weights, "ids", ("embedding",), what="test videos")


def write_predictions(out_dir: str | Path, prediction: dict) -> Path:
    """The (ensembled) test embeddings written as `result.zip`."""
    from vmmlib.submissions import qqbrowser as result_zip

    return result_zip.write(Path(out_dir) / "result.zip", prediction["ids"].tolist(), prediction["embedding"])


def required_ids(data: QQData, split: str) -> list[str]:
    """Every video id of a split: the submission must hold an embedding for each."""
    return list(data.split(split).ids)
