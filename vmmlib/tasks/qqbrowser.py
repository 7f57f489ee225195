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
import scipy.stats
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
from vmmlib.metrics.qqbrowser import pair_cosine
from vmmlib.runs import call_with_options, check_choice
from vmmlib.runs import submitted_weights as fold_checkpoint  # the weights a fold folder submits

NAME = "qqbrowser"


def make_sample(out_dir: str | Path, **options) -> Path:
    """Write sample data in the real layout (see `write_qqbrowser_sample` for the options)."""
    return call_with_options(write_qqbrowser_sample, out_dir, options=options, what="sample option")


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
        records = (r for p in paths for r in read_examples(p, schema=qq.SCHEMA, raw_dtypes=qq.RAW_DTYPES))
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


# --- objectives ----------------------------------------------------------------------------------

PRETRAIN_TERMS = ("tag", "mlm", "nce", "distill")
FINETUNE_TERMS = ("mse", "kl", "tag")


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
    weights = L.objective_weights(weights, PRETRAIN_TERMS)
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
            if (
                "vision_embedding" not in out
                or out["vision_embedding"].shape[-1] != out["text_embedding"].shape[-1]
            ):
                raise ValueError(
                    f"{type(model).__name__} has no vision and text embeddings of one width before fusion, "
                    "which the nce term needs (MixNeXtVLAD maps the text to the vision width; set nce to 0)"
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
    weights = L.objective_weights(weights, FINETUNE_TERMS)
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


def spearman_eval(data: QQData, pair_idx: np.ndarray | None = None, *, batch_size: int = 64):
    """An `eval_fn` for `fit`: Spearman on the given pairs (all labelled pairs by default)."""
    pair_idx = np.arange(len(data.pairs)) if pair_idx is None else np.asarray(pair_idx)
    subset = pair_videos(data, pair_idx)

    def eval_fn(m) -> dict:
        ids, emb = embed(m, subset, batch_size=batch_size)
        return {"spearman": spearman(ids, emb, data.pairs.iloc[pair_idx])}

    return eval_fn


# --- run-folder artefacts: fold predictions, inference, submission --------------------------------

EMBEDDING_DIM_LIMIT = 256


def build_model(params: dict, data: QQData):
    """The model a run folder's params describe (`model`, `model_options`, `text_model_dir`), sized
    to the data (tag count and vocabulary come from the data, not from `model_options`)."""
    from vmmlib.models import create_model

    options, sized = dict(params.get("model_options") or {}), data.model_overrides()
    fixed = sorted(set(options) & set(sized))
    if fixed:
        raise ValueError(
            f"model option(s) {', '.join(fixed)} come from the data; leave them out of model_options"
        )
    if params.get("text_model_dir"):
        options["text_model_dir"] = str(params["text_model_dir"])
    return create_model(params["model"], **options, **sized)


def save_fold_predictions(
    out_dir: str | Path, model, data: QQData, val_idx: np.ndarray, fold: int
) -> pd.DataFrame:
    """Write the fold's out-of-fold pair embeddings (`oof_pairs.npz`) and predictions (`val_pairs.csv`).

    Returns:
        DataFrame(pair, query, candidate, relevance, cosine) of the validation pairs.
    """
    ids, emb = embed(model, pair_videos(data, val_idx))
    row = {v: i for i, v in enumerate(ids)}
    pairs = data.pairs.iloc[val_idx]
    emb_a = emb[[row[v] for v in pairs["query"]]]
    emb_b = emb[[row[v] for v in pairs["candidate"]]]
    out = Path(out_dir)
    np.savez(
        out / "oof_pairs.npz",
        pair=np.asarray(val_idx),
        fold=np.full(len(val_idx), fold),
        emb_a=emb_a,
        emb_b=emb_b,
    )
    table = pairs.assign(pair=np.asarray(val_idx), cosine=pair_cosine(emb_a, emb_b))
    table.to_csv(out / "val_pairs.csv", index=False)
    return table


def load_oof(folder: str | Path) -> dict[str, np.ndarray]:
    """Out-of-fold pair embeddings of one fold folder, or of an inference folder (all folds)."""
    with np.load(Path(folder) / "oof_pairs.npz") as f:
        return {k: f[k] for k in f.files}


def infer(fold_dirs: list[Path], data: QQData, split: str, *, average: str = "raw", progress: bool = True):
    """Embed a split with every fold's model and average over folds.

    Args:
        average: `raw` — the mean of the un-normalised fold embeddings (seed 000's `ensemble_final`);
            `normalized` — L2-normalise each fold's embeddings first, so no fold dominates by scale.

    Returns:
        (ids, float32 (N, 256) fold-averaged embeddings).
    """
    from vmmlib.checkpoint import load_weights
    from vmmlib.runs import read_yaml

    check_choice("fold average", average, ("raw", "normalized"))
    dataset, total, ids = data.split(split), None, None
    for folder in tqdm(fold_dirs, desc=f"folds → {split}", disable=not progress):
        model = build_model(read_yaml(folder / "params.yaml"), data)
        load_weights(model, fold_checkpoint(folder))
        ids, emb = embed(model, dataset)
        if average == "normalized":
            emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
        total = emb if total is None else total + emb
    return ids, (total / len(fold_dirs)).astype(np.float32)


def write_submission(path: str | Path, ids: list[str], embeddings: np.ndarray) -> Path:
    """`result.zip` in the official format: one JSON object id → list of float16-rounded floats."""
    import json
    import zipfile

    if embeddings.ndim != 2 or embeddings.shape[1] > EMBEDDING_DIM_LIMIT:
        raise ValueError(f"embeddings must be (N, ≤{EMBEDDING_DIM_LIMIT}), got {embeddings.shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        half = embeddings.astype(np.float16)
    bad = np.flatnonzero(~np.isfinite(half).all(axis=1))
    if len(bad):
        raise ValueError(
            f"{len(bad)} embedding(s) are not finite in float16 (|x| > 65504 or NaN), e.g. id {ids[bad[0]]}"
        )
    result = {vid: e.tolist() for vid, e in zip(ids, half)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("result.json", json.dumps(result))
    return path


def read_submission(path: str | Path) -> dict[str, np.ndarray]:
    """Embeddings of a `result.zip` (or a bare `result.json`)."""
    import json
    import zipfile

    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.endswith(".json")]
            if len(names) != 1:
                raise ValueError(f"{path}: expected one .json file in the zip, found {names or 'none'}")
            raw = json.loads(zf.read(names[0]))
    else:
        raw = json.loads(path.read_text())
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: the JSON must be an object id → embedding")
    return {str(k): np.asarray(v, dtype=np.float32) for k, v in raw.items()}


def validate_submission(path: str | Path, required_ids) -> list[str]:
    """Problems with a submission (empty list: valid): format, dimension ≤ 256, finiteness, missing ids."""
    try:
        emb = read_submission(path)
    except (ValueError, OSError) as e:
        return [str(e)]
    problems = []
    dims = {v.shape for v in emb.values()}
    if len(dims) > 1:
        problems.append(f"embeddings have different shapes: {sorted(dims)[:3]}")
    for shape in dims:
        if len(shape) != 1 or not 0 < shape[0] <= EMBEDDING_DIM_LIMIT:
            problems.append(
                f"an embedding has shape {shape}; each must be a list of 1..{EMBEDDING_DIM_LIMIT} floats"
            )
    bad = [k for k, v in emb.items() if not np.isfinite(v).all()]
    if bad:
        problems.append(f"{len(bad)} embedding(s) hold NaN or inf, e.g. id {bad[0]}")
    missing = [v for v in dict.fromkeys(required_ids) if v not in emb]
    if missing:
        problems.append(f"{len(missing)} required id(s) missing, e.g. {missing[0]}")
    return problems


def evaluate_submission(pred: str | Path, truth: str | Path) -> dict[str, float]:
    """The official score of a submission against a `label.tsv`: {"spearman": ρ, "pairs": n}."""
    pairs = qq.read_pairs(truth)
    return {"spearman": qq_spearman(read_submission(pred), pairs), "pairs": len(pairs)}


def oof_spearman(oofs: list[dict], weights, pairs: pd.DataFrame) -> float:
    """Spearman over all out-of-fold pairs of the weighted sum of several models' embeddings.

    Each model's `oof` (see `load_oof`) is aligned on the pair index; the ensemble embedding of a
    video is Σ_m w_m e_m, as the seed's `ensemble_final` sums fold-averaged embeddings.
    """
    order = [np.argsort(o["pair"], kind="stable") for o in oofs]
    pair_ids = oofs[0]["pair"][order[0]]
    for o, idx in zip(oofs[1:], order[1:]):
        if not np.array_equal(o["pair"][idx], pair_ids):
            raise ValueError("the models' out-of-fold pairs differ: use the same folds for every model")
    emb_a = sum(w * o["emb_a"][idx] for w, o, idx in zip(weights, oofs, order))
    emb_b = sum(w * o["emb_b"][idx] for w, o, idx in zip(weights, oofs, order))
    cos = pair_cosine(emb_a, emb_b)
    return float(scipy.stats.spearmanr(cos, pairs["relevance"].to_numpy()[pair_ids]).correlation)


# --- what the notebooks call ---------------------------------------------------------------------

BACKBONE_PREFIXES = ("text.backbone.", "encoder.")  # the pretrained text stacks (lower lr)
METRIC = "spearman"
HELD_OUT = "validation pairs"  # what a fold's val_idx counts


def pretrain_dataset(data: QQData) -> qq.VideoDataset:
    """Pretraining videos: the pointwise split (with tags)."""
    return data.split("pointwise")


def pretrain_eval(data: QQData):
    """Seed 000 evaluates pretraining by Spearman on every labelled pair."""
    return spearman_eval(data)


def finetune_datasets(
    data: QQData, n_folds: int, fold: int, *, scheme: str = "seed", seed: int = 42, fold_size=None
):
    """(train PairDataset, validation pair indices) of one fold."""
    train_idx, val_idx = fold_pairs(data, n_folds, fold, scheme=scheme, seed=seed, fold_size=fold_size)
    return qq.PairDataset(data.split("pairwise"), data.pairs, train_idx), val_idx


def finetune_eval(data: QQData, val_idx: np.ndarray):
    """Validation Spearman of the fold's held-out pairs."""
    return spearman_eval(data, val_idx)


def plot_fold(table: pd.DataFrame, title: str = ""):
    """Predicted cosine vs labelled relevance of a fold's validation pairs."""
    from vmmlib.plots import plot_scatter

    return plot_scatter(
        table["cosine"], table["relevance"], xlabel="predicted cosine", ylabel="relevance", title=title
    )


def merge_oof(fold_dirs: list[Path]) -> dict[str, np.ndarray]:
    """The out-of-fold pairs of every fold folder of one model, concatenated."""
    parts = [load_oof(f) for f in fold_dirs]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def save_oof(folder: str | Path, oof: dict[str, np.ndarray]) -> Path:
    path = Path(folder) / "oof_pairs.npz"
    np.savez(path, **oof)
    return path


def oof_score(oofs: list[dict], weights, data: QQData) -> float:
    """Out-of-fold Spearman of the weighted ensemble of several models (one model: weights [1])."""
    return oof_spearman(oofs, weights, data.pairs)


def oof_breakdown(oof: dict, data: QQData) -> dict[str, float]:
    """Out-of-fold scores besides `oof_score` (yt8m: per TTA shift); QQ Browser has none."""
    return {}


def save_predictions(path: str | Path, ids: list[str], predictions: np.ndarray) -> Path:
    np.savez(path, ids=np.asarray(ids, dtype=str), predictions=predictions)
    return Path(path)


def load_predictions(path: str | Path) -> tuple[list[str], np.ndarray]:
    with np.load(path) as f:
        return f["ids"].tolist(), f["predictions"]


def required_ids(data: QQData, split: str) -> list[str]:
    """Every video id of a split: the submission must hold an embedding for each."""
    return list(data.split(split).ids)


def write_ensemble_submission(
    out_dir: str | Path, predictions: list[tuple[list[str], np.ndarray]], weights
) -> Path:
    """Σ_m w_m · (fold-averaged embeddings of model m), aligned by id, written as `result.zip`."""
    from vmmlib.ensemble import align_by_id, weighted_sum

    ids, arrays = align_by_id([p[0] for p in predictions], [p[1] for p in predictions])
    return write_submission(Path(out_dir) / "result.zip", ids, weighted_sum(arrays, weights))


def required_ids_for(
    *, truth: str | Path | None = None, data_dir: str | Path | None = None, split: str = "test_a"
) -> list[str]:
    """The ids a submission must cover: every video of a label file's pairs, or of a data split."""
    if truth:
        pairs = qq.read_pairs(truth)
        return list(dict.fromkeys([*pairs["query"], *pairs["candidate"]]))
    if data_dir:
        files = qq.split_files(data_dir, split)
        if not files:
            raise FileNotFoundError(f"{data_dir} has no {split} records")
        return [r["id"][0].decode() for f in files for r in read_examples(f, keys=["id"])]
    raise ValueError("say which ids are required: --truth label.tsv or --data-dir DIR [--split test_a]")


def ensemble_search_space(options: dict) -> dict[str, tuple[float, float]]:
    """Parameters the ensemble searches besides the model weights: none for embedding sums."""
    if options:
        raise ValueError(f"unknown ensemble option(s) {', '.join(options)}; qqbrowser takes none")
    return {}
