"""Task `yt8m`: YouTube-8M 2019 video segment classification (seed 003, hughshaoqz, 9th place).

Data: `vmmlib.data.yt8m` (the real layout); sample data: `vmmlib.data.sample_yt8m`; targets: 3,862
video labels (pretraining on frame-level train shards) and the rated 5-frame segments of the 1,000
whitelisted classes (fine-tuning on v3 validate shards); metric: segment mAP@100K (SPEC §2.3), with
GAP@20 on held-out videos while pretraining. Folds hold out whole validate shards: the seed's first
300 shards (`scheme="holdout"`) or every n-th shard (`scheme="shard"`). Predictions are per-class
ranked segment lists (`SegmentRanking`), TTA shifts and models merged by seed 003's rank vote
(`vmmlib.tasks.yt8m_submission`); the submission is the Kaggle `Class,Segments` CSV.

Reference: Shao & Liu, "BERT for Large-scale Video Segment Classification with Test-time
Augmentation", arXiv:1912.01127.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from vmmlib import losses as L
from vmmlib.data import yt8m as Y
from vmmlib.data.sample_yt8m import write_yt8m_sample
from vmmlib.explore import ExploreReport
from vmmlib.io import read_examples
from vmmlib.io.tfrecord import tfrecord_index
from vmmlib.metrics import yt8m as M
from vmmlib.runs import call_with_options, check_choice
from vmmlib.runs import submitted_weights as fold_checkpoint  # the weights a fold folder submits
from vmmlib.tasks.yt8m_submission import (  # noqa: F401 (notebook-facing functions live there)
    OOF_FILE,
    TTA_RANK_DECAY,
    RatedEntries,
    SegmentRanking,
    ShiftRankings,
    TopSegments,
    _oof_arrays,
    ensemble_search_space,
    evaluate_submission,
    load_oof,
    load_predictions,
    merge_oof,
    oof_breakdown,
    oof_class_table,
    oof_score,
    rank_vote,
    rated_map,
    required_ids_for,
    save_oof,
    save_predictions,
    validate_submission,
    write_ensemble_submission,
)

NAME = "yt8m"
METRIC = "segment_map"
HELD_OUT = "held-out validate shards"  # what a fold's val_idx counts
# The frame encoders / aggregators (BERT stacks, (Ne)XtVLAD streams and branches): every yt8m model
# has some, so `backbone_lr` always applies (the seed trains everything at one learning rate).
BACKBONE_PREFIXES = ("encoder.", "encoders.", "video.", "audio.", "branch.", "branches.")
SPLIT_ALIASES = {"train": "frame/train", "validate": "frame/validate", "test": "frame/test"}


def make_sample(out_dir: str | Path, **options) -> Path:
    """Write sample data in the real layout (see `write_yt8m_sample` for the options)."""
    return call_with_options(write_yt8m_sample, out_dir, options=options, what="sample option")


def explore(
    data_dir: str | Path, *, max_items_per_split: int | None = None, progress: bool = True
) -> ExploreReport:
    """Summarise a YouTube-8M folder: videos and rated segments per split, frames per video, the label
    long tail over 3,862 classes, verticals (vocabulary.csv) or whitelist membership, segment ratings.

    Args:
        max_items_per_split: read at most this many videos of each frame-level split (None: all).
    """
    files = Y.check_layout(data_dir)
    classes = Y.SegmentClasses.read(Path(data_dir) / "segment_label_ids.csv")
    rows, label_counter, ratings, examples, split_rows = [], Counter(), [], [], []
    keys = ["id", "labels", "segment_start_times", "segment_labels", "segment_scores", "rgb"]
    for split, paths in files.items():
        if not split.startswith("frame/"):  # video-level Examples: counted from the record headers
            count = sum(len(tfrecord_index(p, verify_crc=False)) for p in paths)
            split_rows.append({"split": split, "files": len(paths), "items": count})
            continue
        n = 0
        records = (
            r for p in paths for r in read_examples(p, keys=keys, schema=Y.FRAME_SCHEMA, sequence=True,
                                                    raw_dtypes={"rgb": Y.RAW_DTYPES["rgb"]})
        )  # fmt: skip
        for context, lists in tqdm(records, desc=f"reading {split}", disable=not progress, leave=False):
            meta = Y._context(context)
            rgb = lists.get("rgb")
            num_frames = min(0 if rgb is None else len(rgb), Y.MAX_FRAMES)
            label_counter.update(int(c) for c in meta["labels"])
            ratings += meta["segment_scores"].tolist()
            rows.append(
                {"split": split, "id": meta["id"], "num_frames": num_frames, "num_labels": len(meta["labels"]),
                 "rated_segments": len(set(meta["segment_start_times"].tolist()))}
            )  # fmt: skip
            if n < 3:
                examples.append(
                    {"split": split, "id": meta["id"], "num_frames": num_frames, "labels": meta["labels"][:8].tolist(),
                     "rated": [f"{s}:{c}={v:g}" for s, c, v in zip(meta["segment_start_times"], meta["segment_labels"],
                                                                    meta["segment_scores"])][:6]}
                )  # fmt: skip
            n += 1
            if max_items_per_split and n >= max_items_per_split:
                break
        split_rows.append({"split": split, "files": len(paths)})
    items = pd.DataFrame(rows)
    counts = items.groupby("split").agg(
        items=("id", "size"), rated_segments=("rated_segments", "sum"),
        no_frames=("num_frames", lambda s: int((s == 0).sum())),
    )  # fmt: skip
    splits = pd.DataFrame(split_rows).set_index("split").combine_first(counts).reset_index().fillna(0)
    splits = splits.astype({c: int for c in splits.columns if c != "split"})[
        ["split", "files", "items", "rated_segments", "no_frames"]
    ]
    label_counts = pd.Series([label_counter.get(c, 0) for c in range(Y.NUM_CLASSES)], name="videos")
    return ExploreReport(
        splits=splits,
        items=items,
        distributions=["num_frames", "num_labels", "rated_segments"],
        label_counts=label_counts,
        category_counts=_category_counts(Path(data_dir), label_counter, classes),
        targets=pd.Series(ratings, name="segment rating", dtype=float),
        target_name="segment rating",
        examples=pd.DataFrame(examples),
    )


def _category_counts(data_dir: Path, label_counter: Counter, classes: Y.SegmentClasses) -> pd.Series:
    """Label occurrences by top-level vertical (vocabulary.csv `Vertical1`), else by whitelist membership."""
    vocab = data_dir / "vocabulary.csv"
    if vocab.is_file():
        table = pd.read_csv(vocab, usecols=["Index", "Vertical1"])
        vertical = dict(zip(table["Index"].astype(int), table["Vertical1"].fillna("(none)")))
        out: Counter = Counter()
        for label, n in label_counter.items():
            out[vertical.get(label, "(not in vocabulary)")] += n
        return pd.Series(out, name="videos", dtype=int)
    rated = sum(n for c, n in label_counter.items() if c in classes)
    return pd.Series(
        {"whitelisted (rated)": rated, "other": sum(label_counter.values()) - rated}, name="videos"
    )


# --- data for training ---------------------------------------------------------------------------


class StoreView:
    """Some videos of one or more `FrameStore`s, with the interface the yt8m datasets read."""

    def __init__(self, parts: list[tuple[Y.FrameStore, np.ndarray]]):
        self._items = [(store, int(r)) for store, rows in parts for r in rows]
        self.meta = [store.meta[r] for store, r in self._items]
        self.ids = [store.ids[r] for store, r in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def quantized(self, i: int) -> np.ndarray:
        store, r = self._items[i]
        return store.quantized(r)

    def num_frames(self, i: int, max_frames: int = Y.MAX_FRAMES) -> int:
        return min(len(self.quantized(i)), max_frames)


@dataclass
class YT8MData:
    """A YouTube-8M folder opened for training: the whitelist, the shards, the reader options."""

    data_dir: Path
    classes: Y.SegmentClasses
    files: dict[str, list[Path]]
    normalize: bool = True
    window: int | None = None
    max_frames: int = Y.MAX_FRAMES
    n_holdout: int = 300
    unrated_as_negative: bool = False
    train_all: bool = False
    tta_shifts: tuple[int, ...] = (0,)
    cache: bool = True
    stream: bool = False
    _stores: dict = field(default_factory=dict)
    _shard_sizes: dict = field(default_factory=dict)
    _truth: dict | None = None

    def split_name(self, split: str) -> str:
        split = SPLIT_ALIASES.get(split, split)
        check_choice("split", split, [*SPLIT_ALIASES, *self.files])
        return split

    def store(self, split: str) -> Y.FrameStore:
        """All videos of a frame-level split (uint8 frames cached on disk on first use)."""
        split = self.split_name(split)
        if split not in self._stores:
            from vmmlib.data.qqbrowser import cache_dir_for

            cache = cache_dir_for(self.data_dir) / split.replace("/", "-") if self.cache else None
            self._stores[split] = Y.FrameStore(self.files[split], cache)
        return self._stores[split]

    def rows(self, split: str, shards=None) -> np.ndarray:
        """Positions in `store(split)` of the videos of some shards (indices into the name-sorted files)."""
        split = self.split_name(split)
        if split not in self._shard_sizes:  # records per shard, from the record headers only
            self._shard_sizes[split] = [len(tfrecord_index(p, verify_crc=False)) for p in self.files[split]]
        starts = np.concatenate([[0], np.cumsum(self._shard_sizes[split])]).astype(np.int64)
        shards = np.arange(len(starts) - 1) if shards is None else np.asarray(shards, np.int64)
        return np.concatenate(
            [np.arange(starts[s], starts[s + 1]) for s in shards] or [np.zeros(0, np.int64)]
        )

    def view(self, split: str, shards=None) -> StoreView:
        """The videos of some shards of a split (indices into `files[split]`, sorted by name; None: all)."""
        return StoreView([(self.store(split), self.rows(split, shards))])

    def holdout(self) -> np.ndarray:
        """Seed 003's hold-out: the first `n_holdout` validate shards in the seed's enumeration order
        (capped at a quarter of the shards, so small data keeps shards to fine-tune on)."""
        paths = self.files["frame/validate"]
        n = min(self.n_holdout, max(1, len(paths) // 4))
        held, _ = Y.holdout_shards(paths, n)
        return np.array(sorted(paths.index(p) for p in held))

    def truth(self) -> dict[tuple[str, int], float]:
        """{("vid:start", class): rated score} of every validate video (`read_segment_truth`)."""
        if self._truth is None:
            meta = self.store("frame/validate").meta
            self._truth = M.read_segment_truth(
                [m["id"] for m in meta], [m["segment_start_times"] for m in meta],
                [m["segment_labels"] for m in meta], [m["segment_scores"] for m in meta],
            )  # fmt: skip
        return self._truth

    def segment_dataset(self, view: StoreView) -> Y.SegmentDataset:
        return Y.SegmentDataset(view, unrated_as_negative=self.unrated_as_negative, normalize=self.normalize,
                                max_frames=self.max_frames)  # fmt: skip

    def inference_dataset(self, view: StoreView, shift: int) -> Y.InferenceSegmentDataset:
        return Y.InferenceSegmentDataset(
            view, shift=shift, normalize=self.normalize, max_frames=self.max_frames
        )

    def video_dataset(self, view: StoreView, *, train: bool) -> Y.VideoDataset:
        return Y.VideoDataset(view, window=self.window, random_window=train, max_frames=self.max_frames,
                              normalize=self.normalize)  # fmt: skip


def load(
    data_dir: str | Path,
    *,
    normalize: bool = True,
    window: int | None = None,
    max_frames: int = Y.MAX_FRAMES,
    n_holdout: int = 300,
    unrated_as_negative: bool = False,
    train_all: bool = False,
    tta_shifts: list[int] | tuple[int, ...] = (0,),
    cache: bool = True,
    stream: bool = False,
) -> YT8MData:
    """Open a YouTube-8M folder.

    Args:
        normalize: per-frame L2 normalisation of the 1152-d frames (hughshaoqz, all nine models).
        window: frames per pretraining video: 5 = a random contiguous window (the seed's BERT models;
            the centred one in evaluation), None = the whole video zero-padded to `max_frames`.
        n_holdout: validate shards held out (seed order) for pretraining evaluation and `train_all`.
        unrated_as_negative: fine-tune with every unrated class as a negative, as the seeds' train.py
            does (it never passes `label_weights`); default False: only rated (segment, class)
            entries enter the loss, the entries the metric reads.
        train_all: pretrain on frame/train plus the non-held-out validate shards (`--train_all`;
            leaks into `scheme="shard"` folds, which hold out every shard once).
        tta_shifts: the TTA rolls (SPEC §4.7) of out-of-fold predictions, and of `infer` by default.
        cache: memory-map frames from a cache under `<data_dir>/.vmm_cache` (False: read into memory).
        stream: pretrain on a `VideoStream` (shards streamed with a shuffle buffer, bounded memory:
            the v2 frame-level train split is ~1.5 TB); `make_loader` gives it no sampler.
    """
    data_dir = Path(data_dir)
    files = Y.check_layout(data_dir)
    if window is not None and window < 1:
        raise ValueError(f"window must be None or >= 1, got {window}")
    return YT8MData(
        data_dir=data_dir,
        classes=Y.SegmentClasses.read(data_dir / "segment_label_ids.csv"),
        files=files,
        normalize=normalize,
        window=window,
        max_frames=max_frames,
        n_holdout=n_holdout,
        unrated_as_negative=unrated_as_negative,
        train_all=train_all,
        tta_shifts=tuple(int(s) for s in tta_shifts),
        cache=cache,
        stream=stream,
    )


def build_model(params: dict, data: YT8MData):
    """The model a run's params name (`model`, `model_options`), with a 3,862-way head (fine-tuning
    reads the 1,000 rated columns)."""
    from vmmlib.models import create_model

    return create_model(
        params["model"], **{"num_classes": Y.NUM_CLASSES, **(params.get("model_options") or {})}
    )


FOLD_SCHEMES = ("shard", "holdout")


def fold_shards(data: YT8MData, n_folds: int, fold: int, scheme: str = "shard") -> np.ndarray:
    """Held-out validate shards of a fold (indices into the name-sorted shards)."""
    check_choice("fold scheme", scheme, FOLD_SCHEMES)
    paths = data.files["frame/validate"]
    if scheme == "holdout":
        if fold != 0:
            raise ValueError(f"scheme 'holdout' has one fold (the seed's first shards); got fold {fold}")
        return data.holdout()
    _, val = Y.shard_folds(paths, n_folds, fold)
    return np.array(sorted(paths.index(p) for p in val))


# --- objectives ----------------------------------------------------------------------------------

TERMS = ("bce", "branch_bce", "distill", "l2")


def _bce(logits: torch.Tensor, labels: torch.Tensor, label_weights: torch.Tensor | None, tag_loss: str):
    """Σ over classes, mean over the batch (the seed's CrossEntropyLoss), weighted per entry."""
    if label_weights is None:
        return {"bce": L.tag_bce, "asl": L.asl_loss, "asl_seed": L.asl_loss_seed}[tag_loss](logits, labels)
    per_entry = F.binary_cross_entropy_with_logits(
        logits.float(), labels.float().clamp(0, 1), reduction="none"
    )
    return (per_entry * label_weights).sum(-1).mean()


def _objective(weights: dict, tag_loss: str, temperature: float, segments: bool):
    def objective(model, batch):
        out = model(frames=batch["frames"], frame_mask=batch["frame_mask"])
        lw = batch.get("label_weights") if segments else None
        terms = {}
        if "bce" in weights:
            terms["bce"] = weights["bce"] * _bce(out["logits"], batch["labels"], lw, tag_loss)
        if "branch_bce" in weights and "branch_logits" in out:  # linrongc's aux losses (not hughshaoqz's)
            terms["branch_bce"] = weights["branch_bce"] * sum(
                _bce(z, batch["labels"], lw, tag_loss) for z in out["branch_logits"]
            )
        if "distill" in weights and "branch_logits" in out:
            terms["distill"] = weights["distill"] * L.mixture_distillation(
                out["branch_logits"], out["logits"], temperature
            )
        if "l2" in weights:
            net = getattr(model, "module", model)
            if not hasattr(net, "l2_penalty"):
                raise ValueError(f"{type(net).__name__} has no l2_penalty(); set the l2 weight to 0")
            terms["l2"] = weights["l2"] * net.l2_penalty()
        return terms

    return objective


def pretrain_objective(
    data: YT8MData, weights: dict, *, tag_loss: str = "bce", distill_temperature: float = 3.0
):
    """Video-label pretraining: BCE over 3,862 classes (+ MixNeXtVLAD distillation, + MoE/logistic L2).

    Args:
        weights: {term: weight} over `TERMS`: `bce` (the seed's 1), `distill` = cl_lambda (9 = T²
            at T = 3 in the MixNeXtVLAD scripts), `branch_bce` (linrongc's per-branch BCE; hughshaoqz 0),
            `l2` (1: the TF L2 regulariser, `moe_l2` 1e-6 / logistic 1e-5, as the seed adds it).
    """
    check_choice("tag_loss", tag_loss, L.TAG_LOSSES)
    return _objective(L.objective_weights(weights, TERMS), tag_loss, distill_temperature, segments=False)


def finetune_objective(weights: dict, *, tag_loss: str = "bce", distill_temperature: float = 3.0):
    """Segment fine-tuning: BCE on the segment's rated score, weighted by `label_weights` (1 at rated
    entries; all ones with `load(unrated_as_negative=True)`, the seeds' behaviour). Terms as pretraining."""
    check_choice("tag_loss (segments)", tag_loss, ("bce",))
    return _objective(L.objective_weights(weights, TERMS), tag_loss, distill_temperature, segments=True)


# --- prediction and metric -----------------------------------------------------------------------


def _device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def score_batches(
    models, dataset, columns: np.ndarray | None = None, *, batch_size: int = 256, progress=False
):
    """Yield (ids, float32 (B, K) scores) per batch: the mean over `models` of the class probabilities
    (the MoE's `probs`, else σ(logits)), at `columns` of the 3,862 (None: all), in eval mode."""
    from torch.utils.data import DataLoader

    states = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
        for batch in tqdm(loader, desc="scoring", disable=not progress, leave=False):
            total = 0
            for m in models:
                device = _device(m)
                out = m(frames=batch["frames"].to(device), frame_mask=batch["frame_mask"].to(device))
                probs = out["probs"] if "probs" in out else torch.sigmoid(out["logits"].float())
                total = total + probs.float().cpu().numpy()
            scores = total / len(models)
            yield list(batch["id"]), scores if columns is None else scores[:, columns]
    finally:
        for m, state in zip(models, states):
            m.train(state)


def rank_segments(models, dataset, class_ids, *, progress: bool = False) -> tuple[list[str], SegmentRanking]:
    """Per-class top-100,000 segments of a dataset, by the models' mean probability."""
    top = TopSegments(class_ids)
    ids: list[str] = []
    for batch_ids, scores in score_batches(models, dataset, np.asarray(class_ids), progress=progress):
        ids += batch_ids
        top.add(scores)
    return ids, top.result()


def segment_eval(data: YT8MData, view: StoreView):
    """An `eval_fn`: segment mAP of the rated segments of `view` (unrated ones cannot change it)."""
    dataset = data.segment_dataset(view)
    videos = set(view.ids)
    truth = {k: v for k, v in data.truth().items() if k[0].rsplit(":", 1)[0] in videos}
    entries = RatedEntries.from_truth(truth, data.classes.class_ids)
    column = {int(c): j for j, c in enumerate(data.classes.class_ids)}

    def eval_fn(model) -> dict:
        ids, chunks = [], []
        for batch_ids, scores in score_batches([model], dataset, data.classes.class_ids):
            ids += batch_ids
            chunks.append(scores)
        scores = np.concatenate(chunks) if chunks else np.zeros((0, len(column)), np.float32)
        where = {s: j for j, s in enumerate(ids)}
        seg = np.array([where.get(s, -1) for s in entries.segment_ids], np.int64)
        cols = np.array([column[int(c)] for c in entries.class_ids], np.int64)
        entry_score = np.where(seg >= 0, scores[np.maximum(seg, 0), cols] if len(ids) else 0.0, 0.0)
        return {METRIC: rated_map(entries, entry_score, seg >= 0, seg)}

    return eval_fn


# --- what the notebooks call ---------------------------------------------------------------------


def pretrain_dataset(data: YT8MData):
    """Video-label pretraining items: frame/train videos (+ non-held-out validate shards with
    `train_all`), random access or streamed (`stream`); video-level means when only video/train exists."""
    if "frame/train" not in data.files:
        return Y.VideoLevelDataset(data.files["video/train"])
    rest = (
        np.setdiff1d(np.arange(len(data.files["frame/validate"])), data.holdout()) if data.train_all else []
    )
    if data.stream:
        paths = data.files["frame/train"] + [data.files["frame/validate"][i] for i in rest]
        return Y.VideoStream(paths, window=data.window, max_frames=data.max_frames, normalize=data.normalize,
                             shuffle_buffer=4096)  # fmt: skip
    parts = [(data.store("frame/train"), data.rows("frame/train"))]
    if len(rest):
        parts.append((data.store("frame/validate"), data.rows("frame/validate", rest)))
    return data.video_dataset(StoreView(parts), train=True)


def pretrain_eval(data: YT8MData, *, batch_size: int = 256):
    """Held-out shards: segment mAP (`METRIC`, the 3,862-way head read at the rated classes) and
    GAP@20 of the video labels (centred `window`, or whole videos)."""
    view = data.view("frame/validate", data.holdout())
    seg_eval = segment_eval(data, view)
    videos = data.video_dataset(view, train=False)
    labels = np.stack([Y.multi_hot(m["labels"]) for m in view.meta]) if len(view) else None

    def eval_fn(model) -> dict:
        scores = np.concatenate([s for _, s in score_batches([model], videos, batch_size=batch_size)])
        return {**seg_eval(model), "gap": M.gap(scores, labels)}

    return eval_fn


def finetune_datasets(data: YT8MData, n_folds: int, fold: int, *, scheme: str = "shard", seed: int = 0,
                      fold_size=None):  # fmt: skip
    """(train `SegmentDataset` over the other validate shards, held-out shard indices) of one fold.

    Folds are whole shards and deterministic: `seed` is unused, `fold_size` must be None."""
    if fold_size:
        raise ValueError("yt8m folds are whole shards: leave fold_size at 0 (set n_holdout in data_options)")
    val_idx = fold_shards(data, n_folds, fold, scheme)
    train_idx = np.setdiff1d(np.arange(len(data.files["frame/validate"])), val_idx)
    return data.segment_dataset(data.view("frame/validate", train_idx)), val_idx


def finetune_eval(data: YT8MData, val_idx: np.ndarray):
    """Segment mAP (official semantics) of the held-out shards' rated segments."""
    return segment_eval(data, data.view("frame/validate", val_idx))


def save_fold_predictions(
    out_dir: str | Path, model, data: YT8MData, val_idx: np.ndarray, fold: int
) -> pd.DataFrame:
    """Rank the held-out shards' segments per class at every TTA shift (`data.tta_shifts`) and write them
    (`oof_pairs.npz`); return per-class AP per shift and of the TTA rank vote (`fold_segment_ap.csv`).

    Returns:
        DataFrame(class, positives, ap_shift<s>..., ap_tta): the classes with rated positives.
    """
    view = data.view("frame/validate", val_idx)
    ids, rankings = None, []
    for shift in data.tta_shifts:
        ids_s, ranking = rank_segments([model], data.inference_dataset(view, shift), data.classes.class_ids)
        if ids is not None and ids_s != ids:
            raise RuntimeError("TTA shifts produced different segment lists")
        ids = ids_s
        rankings.append(ranking)
    oof = _oof_arrays(ids, rankings, data.tta_shifts, np.full(len(ids), fold))
    np.savez(Path(out_dir) / OOF_FILE, **oof)
    table = oof_class_table(oof, data)
    table.to_csv(Path(out_dir) / "fold_segment_ap.csv", index=False)
    return table


def plot_fold(table: pd.DataFrame, title: str = ""):
    """Segment mAP per TTA shift and after the rank vote, and the per-class AP histogram (TTA)."""
    import matplotlib.pyplot as plt

    cols = [c for c in table.columns if c.startswith("ap_")]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.2))
    means = table[cols].mean()
    left.bar([c[3:] for c in cols], means.to_numpy(), color=["tab:blue"] * (len(cols) - 1) + ["tab:orange"])
    for x, y in enumerate(means):
        left.annotate(f"{y:.3f}", (x, y), ha="center", va="bottom")
    left.set(title="segment mAP", ylim=(0, 1.05))
    right.hist(table["ap_tta"], bins=20, range=(0, 1), color="tab:orange")
    right.set(title="per-class AP (TTA)", xlabel="AP", ylabel="classes")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def infer(fold_dirs: list[Path], data: YT8MData, split: str, *, average: str = "raw", shifts=None,
          progress: bool = True) -> tuple[list[str], ShiftRankings]:  # fmt: skip
    """Rank every segment of a split per class with every fold's model, at every TTA shift.

    Args:
        average: "raw" — per shift, rank by the mean of the folds' probabilities; "rank" — rank per
            fold, then merge the folds by the TTA rank vote.
        shifts: TTA rolls (SPEC §4.7, e.g. [-2, -1, 0, 1] for "TTA[-2, 1]"); None: `data.tta_shifts`.

    Returns:
        (segment ids "vid:5k", `ShiftRankings`: per shift, the ranking of the whitelisted classes;
        `.merged()` is their rank vote, w0 = 3.72384689385059, equal weights, as the seed's TTA).
    """
    from vmmlib.checkpoint import load_weights
    from vmmlib.runs import read_yaml

    check_choice("fold average", average, ("raw", "rank"))
    shifts = data.tta_shifts if shifts is None else tuple(int(s) for s in shifts)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    models = []
    for folder in fold_dirs:
        model = build_model(read_yaml(Path(folder) / "params.yaml"), data)
        load_weights(model, fold_checkpoint(folder))
        models.append(model.to(device).eval())
    view = data.view(split)
    ids, per_shift = None, []
    for shift in tqdm(shifts, desc=f"TTA shifts → {split}", disable=not progress):
        dataset = data.inference_dataset(view, shift)
        if average == "raw":
            ids, ranking = rank_segments(models, dataset, data.classes.class_ids)
        else:
            folds = [rank_segments([m], dataset, data.classes.class_ids) for m in models]
            ids, ranking = folds[0][0], rank_vote([r for _, r in folds], rank_decay=TTA_RANK_DECAY)
        per_shift.append(ranking)
    return ids, ShiftRankings(shifts, per_shift)


def required_ids(data: YT8MData, split: str) -> list[int]:
    """The classes a submission must rank: the whitelist (the same for every split)."""
    data.split_name(split)
    return data.classes.class_ids.tolist()
