"""Task `yt8m`: YouTube-8M 2019 video segment classification (seed 003, hughshaoqz, 9th place).

Data: `vmmlib.data.yt8m.reader` (the real layout), `vmmlib.data.yt8m.folder` (`load` → `YT8MData`); sample
data: `vmmlib.data.yt8m.sample`; targets: 3,862 video labels (pretraining on frame-level train shards)
and the rated 5-frame segments of the 1,000 whitelisted classes (fine-tuning on v3 validate shards);
metric: segment mAP@100K (SPEC §2.3), with GAP@20 on held-out videos while pretraining. Folds hold out
whole validate shards: the seed's first 300 shards (`scheme="holdout"`) or every n-th shard
(`scheme="shard"`). Predictions are per-class ranked segment lists (`SegmentRanking`), TTA shifts and
models merged by seed 003's rank vote (`vmmlib.ranking`); the submission is the Kaggle
`Class,Segments` CSV.

Reference: Shao & Liu, "BERT for Large-scale Video Segment Classification with Test-time
Augmentation", arXiv:1912.01127.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from vmmlib.data.yt8m import reader as Y
from vmmlib.data.yt8m.datasets import VideoLevelDataset, VideoStream
from vmmlib.data.yt8m.folder import StoreView, YT8MData, load  # noqa: F401 (the notebooks call T.load)
from vmmlib.explore import Split, Summary, zeros
from vmmlib.io import read_examples
from vmmlib.io.tfrecord import tfrecord_index
from vmmlib.metrics import yt8m as M
from vmmlib.metrics.yt8m import MAX_SEGMENTS_PER_CLASS, RatedEntries, rated_map
from vmmlib.objectives import losses as L
from vmmlib.objectives import tagging as TG
from vmmlib.objectives.compose import objective_of
from vmmlib.options import check_choice
from vmmlib.plots import plot_shift_aps as plot_fold  # noqa: F401 (the contract name)
from vmmlib.predict.loop import predict_batches
from vmmlib.progress import progress as progress_bar
from vmmlib.ranking import (
    TTA_RANK_DECAY,
    Ranking,
    ShiftRankings,
    TopK,
    align_rankings,
    merge_parts,
    rank_vote,
    rank_vote_scores,
)

NAME = "yt8m"  # submission: the Kaggle CSV, Class,Segments
METRIC = "segment_map"  # also the pretraining metric: the best fine-tuning checkpoint is kept
TERMS = ("bce", "branch_bce", "distill", "l2")
PRETRAIN_TERMS = FINETUNE_TERMS = TERMS
# The frame encoders / aggregators (BERT stacks, (Ne)XtVLAD streams and branches): every yt8m model
# has some, so `backbone_lr` always applies (the seed trains everything at one learning rate).
BACKBONE_PREFIXES = ("encoder.", "encoders.", "video.", "audio.", "branch.", "branches.")


def summarize(data_dir: Path) -> Summary:
    """A YouTube-8M folder for `explore`: videos and rated segments per split, frames per video, the
    label long tail over 3,862 classes, verticals (vocabulary.csv) or whitelist membership, ratings."""
    files = Y.check_layout(data_dir)
    classes = Y.SegmentClasses.read(data_dir / "segment_label_ids.csv")
    label_counts, ratings = Counter(), []
    keys = ["id", "labels", "segment_start_times", "segment_labels", "segment_scores", "rgb"]

    def read(split: str, record) -> tuple[dict, dict]:
        context, lists = record
        meta = Y.parse_context(context)
        num_frames = min(len(lists.get("rgb", ())), Y.MAX_FRAMES)
        label_counts.update(int(c) for c in meta["labels"])
        ratings.extend(meta["segment_scores"].tolist())
        rated = zip(meta["segment_start_times"], meta["segment_labels"], meta["segment_scores"])
        return (
            {"id": meta["id"], "num_frames": num_frames, "num_labels": len(meta["labels"]),
             "rated_segments": len(set(meta["segment_start_times"].tolist()))},
            {"id": meta["id"], "num_frames": num_frames, "labels": meta["labels"][:8].tolist(),
             "rated": [f"{s}:{c}={v:g}" for s, c, v in rated][:6]},
        )  # fmt: skip

    def counts(rows: list[dict]) -> dict:
        return {
            "rated_segments": sum(r["rated_segments"] for r in rows),
            "no_frames": zeros(rows, "num_frames"),
        }

    def split(name: str, paths: list[Path]) -> Split:
        if not name.startswith("frame/"):  # video-level Examples: counted from the record headers
            return Split(
                name,
                len(paths),
                counts={"items": sum(len(tfrecord_index(p, verify_crc=False)) for p in paths)},
            )
        records = (r for p in paths for r in read_examples(p, keys=keys, schema=Y.FRAME_SCHEMA, sequence=True,
                                                           raw_dtypes={"rgb": Y.RAW_DTYPES["rgb"]}))  # fmt: skip
        return Split(name, len(paths), records, counts)

    def finish(items: pd.DataFrame, splits: pd.DataFrame) -> dict:
        splits = splits.reindex(columns=["split", "files", "items", "rated_segments", "no_frames"]).fillna(0)
        return {"splits": splits.astype({c: int for c in splits.columns if c != "split"}),
                "label_counts": pd.Series([label_counts.get(c, 0) for c in range(Y.NUM_CLASSES)], name="videos"),
                "category_counts": Y.vertical_counts(data_dir, label_counts, classes),
                "targets": pd.Series(ratings, name="segment rating", dtype=float), "target_name": "segment rating"}  # fmt: skip

    return Summary(
        [split(s, p) for s, p in files.items()], read, finish, ["num_frames", "num_labels", "rated_segments"]
    )


# --- model, folds and objectives (the data folder opened for training: `vmmlib.data.yt8m.folder.YT8MData`) --


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


def pretrain_objective(data: YT8MData, terms: tuple[str, ...], *, tag_loss: str = "bce",
                       distill_temperature: float = 3.0):  # fmt: skip
    """Video-label pretraining: BCE over 3,862 classes (+ MixNeXtVLAD distillation, + MoE/logistic L2),
    `vmmlib.objectives.tagging.video_label_terms`.

    Args:
        terms: of `TERMS`: `bce` (the seed's weight 1), `distill` (cl_lambda: 9 = T² at T = 3 in the
            MixNeXtVLAD scripts), `branch_bce` (linrongc's per-branch BCE; hughshaoqz 0), `l2` (weight
            1: the TF L2 regulariser, `moe_l2` 1e-6 / logistic 1e-5, as the seed adds it).
    """
    L.tag_loss_fn(tag_loss)
    return objective_of(
        TG.video_label_terms, terms=terms, tag_loss=tag_loss, distill_temperature=distill_temperature
    )


def finetune_objective(data: YT8MData, terms: tuple[str, ...], *, tag_loss: str = "bce",
                       distill_temperature: float = 3.0, unrated_as_negative: bool = False):  # fmt: skip
    """Segment fine-tuning: BCE on the segment's rated score at the rated (segment, class) entries, the
    entries the metric reads. `unrated_as_negative`: every unrated class is a negative too, as the seeds'
    train.py does (it never passes `label_weights`). Terms as pretraining."""
    check_choice("tag_loss (segments)", tag_loss, ("bce",))
    return objective_of(TG.video_label_terms, terms=terms, tag_loss=tag_loss, distill_temperature=distill_temperature,
                        rated_entries=True, unrated_as_negative=unrated_as_negative)  # fmt: skip


# --- scoring, evaluation -----------------------------------------------------------------------------


def _probabilities(columns: np.ndarray | None):
    """A `predict_batches` step: the class probabilities (the MoE's `probs`, else σ(logits)) at `columns`."""
    cols = None if columns is None else torch.as_tensor(np.asarray(columns), dtype=torch.long)

    def step(model, batch):
        out = model(frames=batch["frames"], frame_mask=batch["frame_mask"])
        probs = out["probs"] if "probs" in out else torch.sigmoid(out["logits"].float())
        return probs if cols is None else probs[:, cols.to(probs.device)]

    return step


def rank_segments(models, dataset, class_ids, *, progress: bool = False) -> tuple[list[str], Ranking]:
    """Per-class top-100,000 segments of a dataset, by the models' mean probability."""
    top = TopK(np.asarray(class_ids, np.int64), MAX_SEGMENTS_PER_CLASS, merge_rows=65_536)
    ids: list[str] = []
    for batch, scores in predict_batches(
        models, dataset, _probabilities(class_ids), batch_size=256, progress=progress
    ):
        ids += list(batch["id"])
        top.add(scores)
    return ids, top.result()


def segment_eval(data: YT8MData, view: StoreView):
    """An `eval_fn`: segment mAP of the rated segments of `view` (unrated ones cannot change it)."""
    dataset = data.segment_dataset(view)
    videos = set(view.ids)
    truth = {k: v for k, v in data.truth().items() if k[0].rsplit(":", 1)[0] in videos}
    entries = RatedEntries.from_truth(truth, data.classes.class_ids)
    column = {int(c): j for j, c in enumerate(data.classes.class_ids)}
    cols = np.array([column[int(c)] for c in entries.class_ids], np.int64)
    step = _probabilities(data.classes.class_ids)

    def eval_fn(model) -> dict:
        ids, chunks = [], []
        for batch, scores in predict_batches(model, dataset, step, batch_size=256):
            ids += list(batch["id"])
            chunks.append(scores)
        scores = np.concatenate(chunks) if chunks else np.zeros((0, len(column)), np.float32)
        where = {s: j for j, s in enumerate(ids)}
        seg = np.array([where.get(s, -1) for s in entries.segment_ids], np.int64)
        entry_score = np.where(seg >= 0, scores[np.maximum(seg, 0), cols] if len(ids) else 0.0, 0.0)
        return {METRIC: rated_map(entries, entry_score, seg >= 0, seg)}

    return eval_fn


def pretrain_dataset(data: YT8MData):
    """Video-label pretraining items: frame/train videos (+ non-held-out validate shards with
    `train_all`), random access or streamed (`stream`); video-level means when only video/train exists."""
    if "frame/train" not in data.files:
        return VideoLevelDataset(data.files["video/train"])
    rest = (
        np.setdiff1d(np.arange(len(data.files["frame/validate"])), data.holdout()) if data.train_all else []
    )
    if data.stream:
        paths = data.files["frame/train"] + [data.files["frame/validate"][i] for i in rest]
        return VideoStream(paths, window=data.window, max_frames=data.max_frames, normalize=data.normalize,
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
    step = _probabilities(None)

    def eval_fn(model) -> dict:
        scores = np.concatenate([s for _, s in predict_batches(model, videos, step, batch_size=batch_size)])
        return {**seg_eval(model), "gap": M.gap(scores, labels)}

    return eval_fn


def finetune_datasets(data: YT8MData, n_folds: int, fold: int, *, scheme: str = "shard"):
    """(train `SegmentDataset` over the other validate shards, held-out shard indices) of one fold;
    folds are whole shards, deterministic (`holdout`: the seed's first `n_holdout` shards)."""
    val_idx = fold_shards(data, n_folds, fold, scheme)
    train_idx = np.setdiff1d(np.arange(len(data.files["frame/validate"])), val_idx)
    return data.segment_dataset(data.view("frame/validate", train_idx)), val_idx


def finetune_eval(data: YT8MData, val_idx: np.ndarray):
    """Segment mAP (official semantics) of the held-out shards' rated segments."""
    return segment_eval(data, data.view("frame/validate", val_idx))


# --- rankings on disk: per TTA shift, the segments ranked per whitelisted class ---------------------


def _shift_arrays(ids, stack: ShiftRankings) -> dict[str, np.ndarray]:
    """segment ids (N,), class ids (C,), shifts (H,), index/score (H, C, K) per shift."""
    return {"segment_ids": np.asarray(ids, dtype=str), "class_ids": stack.query_ids,
            "shifts": np.asarray(stack.shifts, np.int64), "index": stack.padded("index"),
            "score": stack.padded("score")}  # fmt: skip


def _shift_rankings(arrays: dict) -> ShiftRankings:
    rankings = [Ranking(arrays["class_ids"], i, s) for i, s in zip(arrays["index"], arrays["score"])]
    return ShiftRankings(tuple(arrays["shifts"].tolist()), rankings)


def _rank_shifts(models, data: YT8MData, view: StoreView, shifts, average: str, progress: bool):
    ids, per_shift = None, []
    for shift in progress_bar(shifts, desc="TTA shifts", disable=not progress, leave=False):
        dataset = data.inference_dataset(view, shift)
        if average == "raw":
            ids_s, ranking = rank_segments(models, dataset, data.classes.class_ids)
        else:
            folds = [rank_segments([m], dataset, data.classes.class_ids) for m in models]
            ids_s, ranking = folds[0][0], rank_vote([r for _, r in folds], rank_decay=TTA_RANK_DECAY,
                                                    top_k=MAX_SEGMENTS_PER_CLASS)  # fmt: skip
        if ids is not None and ids_s != ids:
            raise RuntimeError("TTA shifts produced different segment lists")
        ids = ids_s
        per_shift.append(ranking)
    return _shift_arrays(ids, ShiftRankings(tuple(int(s) for s in shifts), per_shift))


def predict_fold(
    model, data: YT8MData, val_idx: np.ndarray, fold: int, *, shifts=(0,)
) -> dict[str, np.ndarray]:
    """The held-out shards' segments ranked per class at every TTA shift (SPEC §4.7), with their fold."""
    oof = _rank_shifts([model], data, data.view("frame/validate", val_idx), shifts, "raw", progress=False)
    return {**oof, "fold": np.full(len(oof["segment_ids"]), fold, np.int64)}


def predict(
    models: list, data: YT8MData, split: str, *, average: str = "raw", shifts=(0,), progress: bool = True
):
    """Every segment of a split ranked per class by a model's fold models, at every TTA shift.

    Args:
        average: "raw" — per shift, rank by the mean of the folds' probabilities; "rank" — rank per
            fold, then merge the folds by the TTA rank vote.
        shifts: TTA rolls (SPEC §4.7, e.g. [-2, -1, 0, 1] for "TTA[-2, 1]").

    Returns:
        {segment_ids, class_ids, shifts, index, score}: per shift, the ranking of the whitelisted classes.
    """
    check_choice("fold average", average, ("raw", "rank"))
    return _rank_shifts(models, data, data.view(split), shifts, average, progress)


def fold_table(oof: dict, data: YT8MData) -> pd.DataFrame:
    """Per-class segment AP (official `segment_class_average_precisions`) per shift and after TTA:
    DataFrame(class, positives, ap_shift<s>..., ap_tta) over the classes with rated positives."""
    videos = {s.rsplit(":", 1)[0] for s in oof["segment_ids"]}
    truth = {k: v for k, v in data.truth().items() if k[0].rsplit(":", 1)[0] in videos}
    shifts = _shift_rankings(oof)
    columns = {f"ap_shift{s:+d}": r for s, r in zip(shifts.shifts, shifts.rankings)}
    columns["ap_tta"] = shifts.merged(MAX_SEGMENTS_PER_CLASS)
    aps = {k: M.segment_class_average_precisions(r.to_submission(oof["segment_ids"]), truth)
           for k, r in columns.items()}  # fmt: skip
    positives = Counter(c for (_, c), v in truth.items() if v > 0)
    classes = sorted(aps["ap_tta"])
    return pd.DataFrame({"class": classes, "positives": [positives[c] for c in classes],
                         **{k: [a[c] for c in classes] for k, a in aps.items()}})  # fmt: skip


def merge_oof(parts: list[dict], *, by: str = "rank") -> dict[str, np.ndarray]:
    """The folds' out-of-fold rankings of one model as one (per shift and class, top 100,000 kept).

    Args:
        by: "rank" (default) interleaves the folds' lists by relative rank (i + ½) / n: fold models
            are calibrated differently, and a test ranking comes from one fold-averaged model, so
            each model is scored on its ranking quality; "score" ranks the pooled probabilities.
    """
    check_choice("merge", by, ("rank", "score"))
    sizes = [len(p["segment_ids"]) for p in parts]
    try:
        merged = merge_parts([_shift_rankings(p) for p in parts], sizes, MAX_SEGMENTS_PER_CLASS, by=by)
    except ValueError as e:
        raise ValueError(f"{e}: use the same predict_options for every fold") from None
    ids = np.concatenate([p["segment_ids"] for p in parts])
    return {**_shift_arrays(ids, merged), "fold": np.concatenate([p["fold"] for p in parts])}


def combine(predictions: list[dict], weights, *, rank_decay: float = TTA_RANK_DECAY) -> dict:
    """Each model's TTA shifts merged by the TTA vote, then the models' lists by the weighted rank vote
    `w_m · w0 / (i + w0)`, w0 = `rank_decay` (SPEC §4.8, with the per-model weight vector the seed's
    objective meant to build), ≤ 100,000 segments per class: one model's arrays with one "shift" 0."""
    merged = [
        (p["segment_ids"].tolist(), _shift_rankings(p).merged(MAX_SEGMENTS_PER_CLASS)) for p in predictions
    ]
    ids, rankings = align_rankings(merged)
    vote = rank_vote(rankings, weights, rank_decay=rank_decay, top_k=MAX_SEGMENTS_PER_CLASS)
    return {"segment_ids": np.asarray(ids), "class_ids": np.asarray(vote.query_ids), "shifts": np.zeros(1, np.int64),
            "index": vote.index[None], "score": vote.score[None]}  # fmt: skip


def score_oof(oof: dict, data: YT8MData) -> float:
    """Out-of-fold segment mAP of one model's (or `combine`d ensemble's) TTA-merged ranking, scored on
    the rated entries of the out-of-fold videos alone (`rated_map`): the official metric drops every
    unrated segment."""
    ranking = _shift_rankings(oof).merged(MAX_SEGMENTS_PER_CLASS)
    ids = oof["segment_ids"].tolist()
    videos = {s.rsplit(":", 1)[0] for s in ids}
    truth = {k: v for k, v in data.truth().items() if k[0].rsplit(":", 1)[0] in videos}
    entries = RatedEntries.from_truth(truth, ranking.query_ids)
    where = {s: j for j, s in enumerate(ids)}
    tiebreak = np.array([where.get(s, -1) for s in entries.segment_ids], np.int64)
    vote, present = rank_vote_scores([entries.ranks_in(ids, ranking)], [1.0], TTA_RANK_DECAY)
    return rated_map(entries, vote, present, tiebreak)


def oof_breakdown(oof: dict, data: YT8MData) -> dict[str, float]:
    """Out-of-fold segment mAP of each TTA shift alone ({"shift-1": …, "shift+0": …}); `score_oof`
    scores the shifts' rank vote."""
    if len(oof["shifts"]) < 2:
        return {}
    scores = {}
    for h, shift in enumerate(oof["shifts"].tolist()):
        one = {**oof, **{k: oof[k][h : h + 1] for k in ("shifts", "index", "score")}}
        scores[f"shift{shift:+d}"] = score_oof(one, data)
    return scores


def ensemble_search_space(options: dict) -> dict[str, tuple[float, float]]:
    """Searched besides the model weights: the rank-decay w0 in [0, 10] (seed 003), unless fixed."""
    unknown = sorted(set(options) - {"rank_decay"})
    if unknown:
        raise ValueError(f"unknown ensemble option(s) {', '.join(unknown)}; yt8m takes rank_decay")
    return {} if "rank_decay" in options else {"rank_decay": (0.0, 10.0)}


def write_predictions(out_dir: str | Path, prediction: dict) -> Path:
    """The (TTA-merged) ranking written as `submission.csv` (`Class,Segments`, ≤ 100,000 ranked segment
    ids per whitelisted class)."""
    from vmmlib.submissions import yt8m as kaggle_csv

    ranking = _shift_rankings(prediction).merged(MAX_SEGMENTS_PER_CLASS)
    return kaggle_csv.write(
        Path(out_dir) / "submission.csv", ranking.to_submission(prediction["segment_ids"])
    )


def required_ids(data: YT8MData, split: str) -> list[int]:
    """The classes a submission must rank: the whitelist (the same for every split)."""
    data.split_name(split)
    return data.classes.class_ids.tolist()
