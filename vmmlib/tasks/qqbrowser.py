"""Task `qqbrowser`: QQ Browser 2021 multimodal video similarity (seed 000).

Data: `vmmlib.data.qqbrowser` (the real layout); sample data: `vmmlib.data.sample_qqbrowser`;
target: tags (pretraining) and pair similarity (fine-tuning); metric: Spearman of cosine vs label.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from vmmlib import losses as L
from vmmlib.data import qqbrowser as qq
from vmmlib.data.folds import seed_pair_folds, video_pair_folds
from vmmlib.data.frames import FRAME_MODES
from vmmlib.data.sample_qqbrowser import write_qqbrowser_sample
from vmmlib.data.tokenize import load_tokenizer
from vmmlib.explore import ExploreReport
from vmmlib.io import read_examples
from vmmlib.metrics import qq_spearman
from vmmlib.runs import check_choice

NAME = "qqbrowser"


def make_sample(out_dir: str | Path, **options) -> Path:
    """Write sample data in the real layout (see `write_qqbrowser_sample` for the options)."""
    return write_qqbrowser_sample(out_dir, **options)


def explore(
    data_dir: str | Path, *, max_items_per_split: int | None = None, progress: bool = True
) -> ExploreReport:
    """Summarise a QQ Browser data folder: counts, frames, text lengths, tags, categories, pair labels.

    Args:
        max_items_per_split: read at most this many videos of each split (None: all).
    """
    files = qq.check_layout(data_dir)
    tags = qq.TagVocab.read(Path(data_dir) / "tag_list.txt")
    rows, tag_counter, examples = [], Counter(), []
    for split, paths in files.items():
        n = 0
        records = (r for p in paths for r in read_examples(p, schema=qq.SCHEMA))
        for record in tqdm(records, desc=f"reading {split}", disable=not progress, leave=False):
            video = qq.parse_video(record)
            kept = [int(t) for t in video["tag_id"] if t in tags]
            tag_counter.update(kept)
            rows.append(
                {
                    "split": split,
                    "id": video["id"],
                    "num_frames": len(video["frames"]),
                    "title_len": len(video["title"]),
                    "asr_len": len(video["asr_text"]),
                    "num_tags": len(kept),
                    "category_id": video["category_id"],
                }
            )
            if n < 3:
                examples.append(
                    {"split": split, "id": video["id"], "title": video["title"], "asr_text": video["asr_text"][:40],
                     "tag_id": list(map(int, video["tag_id"])), "category_id": video["category_id"],
                     "num_frames": len(video["frames"])}
                )  # fmt: skip
            n += 1
            if max_items_per_split and n >= max_items_per_split:
                break
    items = pd.DataFrame(rows)
    pairs = qq.read_pairs(Path(data_dir) / "pairwise" / "label.tsv")
    splits = (
        items.groupby("split", sort=False)
        .agg(items=("id", "size"), no_frames=("num_frames", lambda s: int((s == 0).sum())),
             empty_title=("title_len", lambda s: int((s == 0).sum())))
        .reset_index()
    )  # fmt: skip
    splits.insert(1, "files", [len(files[s]) for s in splits["split"]])
    splits = pd.concat(
        [splits, pd.DataFrame([{"split": "pairs (label.tsv)", "files": 1, "items": len(pairs)}])],
        ignore_index=True,
    ).fillna(0)
    labelled = items[items["category_id"] >= 0]
    return ExploreReport(
        splits=splits,
        items=items,
        distributions=["num_frames", "title_len", "asr_len", "num_tags"],
        label_counts=pd.Series({t: tag_counter.get(int(t), 0) for t in tags.tag_ids}, name="videos"),
        category_counts=labelled["category_id"].floordiv(100).value_counts().rename("videos"),
        targets=pairs["relevance"],
        target_name="pair relevance",
        examples=pd.DataFrame(examples),
    )


# --- data for training ---------------------------------------------------------------------------


@dataclass
class QQData:
    """A QQ Browser data folder opened for training: tokenizer, tag vocabulary, splits and pairs."""

    data_dir: Path
    tokenizer: object
    tags: qq.TagVocab
    pairs: pd.DataFrame
    options: dict = field(default_factory=dict)
    _splits: dict = field(default_factory=dict)

    def split(self, name: str) -> qq.VideoDataset:
        """The `VideoDataset` of a split (frames cached on disk on first use)."""
        if name not in self._splits:
            files = qq.split_files(self.data_dir, name)
            if not files:
                raise FileNotFoundError(f"{self.data_dir} has no {name} records")
            store = qq.VideoStore(files, qq.cache_dir_for(self.data_dir) / name)
            self._splits[name] = qq.VideoDataset(store, self.tokenizer, self.tags, **self.options)
        return self._splits[name]

    def model_overrides(self) -> dict:
        """What a model must match in this data: tag count and vocabulary size."""
        return {"num_tags": len(self.tags), "vocab_size": self.tokenizer.vocab_size}


def load(
    data_dir: str | Path,
    *,
    vocab_path: str | Path | None = None,
    max_frames: int = qq.MAX_FRAMES,
    frame_mode: str = "zero_pad",
    text_field: str = "title",
    max_text_len: int = 32,
) -> QQData:
    """Open a QQ Browser data folder (see `vmmlib.data.qqbrowser.VideoDataset` for the options)."""
    data_dir = Path(data_dir)
    qq.check_layout(data_dir)
    check_choice("frame_mode", frame_mode, FRAME_MODES)
    check_choice("text_field", text_field, qq.TEXT_FIELDS)
    return QQData(
        data_dir=data_dir,
        tokenizer=load_tokenizer(vocab_path or qq.default_vocab(data_dir)),
        tags=qq.TagVocab.read(data_dir / "tag_list.txt"),
        pairs=qq.read_pairs(data_dir / "pairwise" / "label.tsv"),
        options={
            "max_frames": max_frames,
            "frame_mode": frame_mode,
            "text_field": text_field,
            "max_text_len": max_text_len,
        },
    )


FOLD_SCHEMES = ("seed", "video")


def fold_pairs(
    data: QQData, n_folds: int, fold: int, *, scheme: str = "seed", seed: int = 42
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices into `data.pairs`: seed 000's shuffled pair slices, or video-disjoint folds."""
    check_choice("fold scheme", scheme, FOLD_SCHEMES)
    if scheme == "seed":
        return seed_pair_folds(len(data.pairs), n_folds, fold, seed=seed)
    return video_pair_folds(
        list(data.pairs["query"]), list(data.pairs["candidate"]), n_folds, fold, seed=seed
    )


# --- objectives ----------------------------------------------------------------------------------

PRETRAIN_TERMS = ("tag", "mlm", "nce", "distill")
FINETUNE_TERMS = ("mse", "kl", "tag")


def _check_weights(weights: dict, valid: tuple[str, ...]) -> dict:
    unknown = [k for k in weights if k not in valid]
    if unknown:
        raise ValueError(f"unknown objective term(s) {', '.join(unknown)}; valid terms: {', '.join(valid)}")
    return {k: float(v) for k, v in weights.items() if float(v) != 0.0}


def _tag_terms(out: dict, labels: torch.Tensor, tag_loss: str, weight: float) -> dict:
    """Tag loss on the (mixture) logits, plus each MixNeXtVLAD branch's own (seed 000 sums them)."""
    fn = {"bce": L.tag_bce, "asl": L.asl_loss, "asl_seed": L.asl_loss_seed}[tag_loss]
    terms = {"tag": weight * fn(out["tag_logits"], labels)}
    if "branch_tag_logits" in out:
        terms["branch_tag"] = weight * sum(fn(z, labels) for z in out["branch_tag_logits"])
    return terms


def pretrain_objective(data: QQData, weights: dict, *, tag_loss: str = "bce", mlm_prob: float = 0.15,
                       distill_temperature: float = 2.0, nce_temperature: float = 0.07):  # fmt: skip
    """Seed 000's pretraining: tag BCE/ASL + MLM (text only) + vision–text InfoNCE + branch distillation.

    Args:
        weights: {term: weight} over `PRETRAIN_TERMS`; the seed uses tag 1, mlm 10 (UNITER),
            nce 10 and distill 10 (MixNeXtVLAD); a zero weight switches a term off.

    Returns:
        objective(model, batch) -> {term: weighted loss}, for `fit`.
    """
    weights = _check_weights(weights, PRETRAIN_TERMS)
    check_choice("tag_loss", tag_loss, L.TAG_LOSSES)
    tok = data.tokenizer
    special = [tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id, tok.unk_token_id]

    def objective(model, batch):
        inputs = dict(batch)
        mlm_labels = None
        if "mlm" in weights:
            inputs["text_ids"], mlm_labels = L.mlm_mask(
                batch["text_ids"],
                batch["text_mask"],
                tok.vocab_size,
                special,
                prob=mlm_prob,
                mask_id=tok.mask_token_id,
            )
        out = model(**inputs, **({"mlm": True} if mlm_labels is not None else {}))
        terms = {}
        if "tag" in weights:
            terms.update(_tag_terms(out, batch["labels"], tag_loss, weights["tag"]))
        if mlm_labels is not None:
            terms["mlm"] = weights["mlm"] * L.mlm_loss(out["mlm_logits"], mlm_labels)
        if "nce" in weights:
            if "vision_embedding" not in out:
                raise ValueError(
                    f"{type(model).__name__} has no vision/text embeddings before fusion for the nce term"
                )
            terms["nce"] = weights["nce"] * L.info_nce(
                out["vision_embedding"], out["text_embedding"], nce_temperature
            )
        if "distill" in weights and "branch_tag_logits" in out:
            terms["distill"] = weights["distill"] * L.mixture_distillation(
                out["branch_tag_logits"], out["tag_logits"], distill_temperature
            )
        return terms

    return objective


def _concat_pair(batch: dict) -> dict:
    """[videos a; videos b] as one video batch, so BatchNorm sees both sides in one forward pass."""
    a, b = batch["a"], batch["b"]
    return {k: torch.cat([a[k], b[k]]) if torch.is_tensor(a[k]) else list(a[k]) + list(b[k]) for k in a}


def finetune_objective(weights: dict, *, tag_loss: str = "bce"):
    """Seed 000's pair fine-tuning: Σ (cos − y)² + 0.5·KerasKL(y, cos) + tag loss (SPEC §4.3).

    Args:
        weights: {term: weight} over `FINETUNE_TERMS`; the seed's are mse 1, kl 0.5, tag 1.
    """
    weights = _check_weights(weights, FINETUNE_TERMS)
    check_choice("tag_loss", tag_loss, L.TAG_LOSSES)

    def objective(model, batch):
        out = model(**_concat_pair(batch))
        emb_a, emb_b = out["embedding"].chunk(2)
        terms = L.pair_objective_terms(
            emb_a, emb_b, batch["sim"], out["tag_logits"], torch.cat([batch["a"]["labels"], batch["b"]["labels"]]),
            kl_weight=weights.get("kl", 0.0), tag_loss=tag_loss, tag_weight=weights.get("tag", 0.0),
        )  # fmt: skip
        terms["mse"] = weights.get("mse", 0.0) * terms["mse"]
        return {k: v for k, v in terms.items() if k in weights}

    return objective


# --- prediction and metric -----------------------------------------------------------------------


@torch.no_grad()
def embed(model, dataset, *, batch_size: int = 64, progress: bool = False) -> tuple[list[str], np.ndarray]:
    """Embeddings of every video of `dataset` (eval mode): (ids, float32 (N, 256))."""
    from torch.utils.data import DataLoader

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids, chunks = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for batch in tqdm(loader, desc="embedding", disable=not progress, leave=False):
        ids += list(batch["id"])
        inputs = {k: v.to(device) for k, v in batch.items() if torch.is_tensor(v)}
        chunks.append(model(**inputs)["embedding"].float().cpu().numpy())
    model.train(was_training)
    return ids, np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def pair_videos(data: QQData, pair_idx: np.ndarray) -> torch.utils.data.Subset:
    """The pairwise videos that appear in the given pairs (for out-of-fold embeddings)."""
    videos = data.split("pairwise")
    pairs = data.pairs.iloc[np.asarray(pair_idx)]
    rows = sorted({videos.index_of(v) for v in pd.concat([pairs["query"], pairs["candidate"]])})
    return torch.utils.data.Subset(videos, rows)


def spearman(ids: list[str], embeddings: np.ndarray, pairs: pd.DataFrame) -> float:
    """The official metric: Spearman of sklearn-style cosine vs relevance over the pairs."""
    return qq_spearman(dict(zip(ids, embeddings)), pairs)


def spearman_eval(model, data: QQData, pair_idx: np.ndarray | None = None, *, batch_size: int = 64):
    """An `eval_fn` for `fit`: Spearman on the given pairs (all labelled pairs by default)."""
    pair_idx = np.arange(len(data.pairs)) if pair_idx is None else np.asarray(pair_idx)
    subset = pair_videos(data, pair_idx)

    def eval_fn(m) -> dict:
        ids, emb = embed(m, subset, batch_size=batch_size)
        return {"spearman": spearman(ids, emb, data.pairs.iloc[pair_idx])}

    return eval_fn
