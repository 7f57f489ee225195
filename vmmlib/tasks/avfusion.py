"""Task `avfusion`: text + audio + video fusion from raw files (seed 004), ALPRO-style downstream.

Data: `vmmlib.data.avfusion` (manifests, jsonl annotations, PyAV decoding, fbank), opened by
`vmmlib.data.avfusion.folder.load` as `AVFusionData`; sample data: `vmmlib.data.avfusion.sample`; model:
`vmmlib.models.avfusion`; pretraining: the five terms of `vmmlib.objectives.avfusion` (mlm,
video_mae, audio_mae, vtm, vtc) over the training manifest's (video, audio, text) triples.

Downstream (the reader option `downstream`):

- `retrieval` (default): text→video retrieval ranked by the contrastive cosine of the unimodal
  embeddings, optionally re-ranked in each caption's top k by the ITM head (`rerank_k`, ALPRO
  scores every pair with ITM, quadratic). `METRIC` "score" = text→video mean recall
  (R@1 + R@5 + R@10) / 3 as a **fraction** in [0, 1] (ALPRO prints percent); `oof_breakdown` and
  the fold table add R@1/5/10 both ways, medianR and meanR (1-indexed, ALPRO), and the unreadable
  videos counted.
- `qa`: open-ended video QA, a classifier over the training answer vocabulary; "score" = overall
  accuracy (fraction); the breakdown gives per-type accuracy (what/who/how/where/when).

`PRETRAIN_METRIC` is the same text→video mean recall, on the validation manifest (each video
against its own text file), held out from pretraining. Folds: `fold_options` `scheme="clips"` (a
seeded k-fold of the training split's videos; galleries are each fold's held-out videos) or
`scheme="val"` (n_folds = 1: the val split, ALPRO's protocol). Out-of-fold arrays carry the split
they score (`split`), shown in the fold table. Unreadable files are skipped and counted (`skipped`).

References: Li et al., "Align and Prompt: Video-and-Language Pre-training with Entity Prompts"
(ALPRO), CVPR 2022; seed 004 (SPEC §1.5, §2.4–2.6, §3.11, §9.3).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from vmmlib.data.avfusion import folder as AF
from vmmlib.data.avfusion.folder import load  # noqa: F401 (the notebooks call T.load)
from vmmlib.data.avfusion.reader import special_token_ids
from vmmlib.explore import Split, Summary
from vmmlib.io.media import MediaError, probe_media
from vmmlib.metrics import avfusion as MA
from vmmlib.objectives import avfusion as AO
from vmmlib.objectives.compose import objective_of
from vmmlib.options import check_choice
from vmmlib.plots import plot_table_bars
from vmmlib.predict import avfusion as P
from vmmlib.tasks import contract

NAME = "avfusion"  # submission: jsonl (or csv), caption → ranked videos, or question → answer
# retrieval: text→video mean recall (fraction); qa: overall accuracy (fraction); pretraining: text→video
# mean recall on the validation manifest
METRIC = "score"
BACKBONE_PREFIXES = ("text.", "video.", "audio.")  # DeBERTa-v2, VideoMAE, ViT-MAE (pretrained folders)
PRETRAIN_TERMS = ("mlm", "video_mae", "audio_mae", "vtm", "vtc")
FINETUNE_TERMS = ("vtc", "vtm", "qa")


def summarize(data_dir: Path) -> Summary:
    """An avfusion folder for `explore`: annotations per split (manifest rows, captions, questions),
    frames per video, durations, audio presence, text lengths, QA answers and question types, and
    the unreadable videos counted (`unreadable` per split); items are the probed videos."""
    data, text_lens = AF.open_annotations(data_dir), []

    def counts(texts: list[str], extra: dict):
        return lambda rows: {"items": len(texts), **extra, "unreadable": sum(1 - r["readable"] for r in rows),
                             "no_audio": sum(1 - r["has_audio"] for r in rows if r["readable"])}  # fmt: skip

    def finish(items: pd.DataFrame, splits: pd.DataFrame) -> dict:
        qa = {s: data.qa(s) for s in AF.SPLITS if (data.root / "qa" / f"{s}.jsonl").is_file()}
        types = Counter(r["answer_type"] or "(none)" for rows in qa.values() for r in rows)
        return {"label_counts": pd.Series(Counter(r["answer"] for r in qa.get("train", ())), name="questions", dtype=int),
                "category_counts": pd.Series(types, name="questions", dtype=int),
                "targets": pd.Series(text_lens, name="words", dtype=float), "target_name": "text length (words)"}  # fmt: skip

    splits = []
    for split, videos, texts, extra in AF.annotated_splits(data):
        text_lens += [len(t.split()) for t in texts]
        examples = [{"video": v, "text": t} for v, t in list(zip(videos, texts))[:2]]
        splits.append(Split(split, len(set(videos)), videos, counts(texts, extra), examples))
    return Summary(
        splits, lambda split, video: (_probe(data, video), None), finish, ["num_frames", "duration", "fps"]
    )


def _probe(data: AF.AVFusionData, video: str) -> dict:
    row = {"id": video, "readable": 1, "num_frames": 0, "duration": 0.0, "fps": 0.0, "has_audio": 0}
    try:
        info = probe_media(data.video_root / video)
    except MediaError:
        return {**row, "readable": 0}
    return {**row, "num_frames": info.num_frames, "duration": info.duration, "fps": info.fps,
            "has_audio": int(info.sample_rate > 0)}  # fmt: skip


def build_model(data: AF.AVFusionData, model: str, model_options: dict, text_model_dir: str):
    """The default build (sized by `AVFusionData.model_overrides`); a model with an audio tower needs
    the data option `with_audio`."""
    net = contract.build_model(data, model, model_options, text_model_dir)
    if net.audio is not None and not data.with_audio:
        raise ValueError(f"{model} has an audio tower but the data option with_audio is False; "
                         "use an avfusion_vt* model or with_audio=True")  # fmt: skip
    return net


# --- pretraining ------------------------------------------------------------------------------------


def pretrain_dataset(data: AF.AVFusionData):
    """The training manifest's (video, audio, text) triples (max_train_samples), random clips."""
    return AF.TrainItems(data.pretrain_items())


def pretrain_objective(data: AF.AVFusionData, terms: tuple[str, ...], *, mlm_prob: float = 0.3,
                       video_mask_ratio: float = 0.9, video_masking: str = "tube", audio_mask_ratio: float = 0.3,
                       match_ratio: float = 0.5, norm_pix: bool = True, temperature: float = 0.07,
                       clean_alignment: bool = True):  # fmt: skip
    """Seed 004's five terms (`vmmlib.objectives.avfusion.pretrain_terms`): MLM 30 %, VideoMAE tube mask
    90 % with an exact count per video (`video_masking="seed_gaussian"` with ratio 0.8: the seed's
    draw), audio MAE 30 %, video–text matching on shuffled pairs, video–text contrastive; the
    alignment terms on a clean second pass (`clean_alignment=False`: the seed's one masked pass)."""
    tok = data.tokenizer
    return objective_of(AO.pretrain_terms, mask_id=tok.mask_token_id, special_ids=special_token_ids(tok), terms=terms,
                        mlm_prob=mlm_prob, video_mask_ratio=video_mask_ratio, video_masking=video_masking,
                        audio_mask_ratio=audio_mask_ratio, match_ratio=match_ratio, norm_pix=norm_pix,
                        temperature=temperature, clean_alignment=clean_alignment)  # fmt: skip


def pretrain_eval(data: AF.AVFusionData, *, rerank_k: int = 0):
    """Text→video mean recall (fraction) on the validation manifest: each video against its text file."""
    split, videos = data.manifest_retrieval("validation")

    def eval_fn(model) -> dict:
        sim, skips = P.retrieval_scores(model, data, split, videos, rerank_k=rerank_k)
        return {**_retrieval_summary(sim, split.text_to_video), "skipped": float(skips.count)}

    return eval_fn


def _retrieval_summary(sim: np.ndarray, text_to_video: np.ndarray) -> dict[str, float]:
    return MA.recall_metrics(*MA.ranks(sim, text_to_video))


# --- fine-tuning ------------------------------------------------------------------------------------


def finetune_datasets(
    data: AF.AVFusionData, n_folds: int, fold: int, *, scheme: str = "clips", seed: int = 42
):
    """(training items, held-out indices) of a fold: `clips` holds out every n-th training video (seeded),
    with all its captions / questions; `val` trains on the whole training split and holds out the val split
    (n_folds = 1). Held-out indices point into `data.holdout_split`'s videos (retrieval) or questions (QA)."""
    train_videos, held = data.fold_indices(n_folds, fold, scheme, seed)
    if data.downstream == "retrieval":
        split = data.retrieval("train").subset(train_videos)
        return AF.TrainItems(data.caption_items(split)), held
    keep = {data.fold_videos()[i] for i in train_videos}
    records = [r for r in data.qa("train") if str(r["video_id"]) in keep]
    return AF.TrainItems(data.qa_items(records, train=True)), held


def finetune_objective(data: AF.AVFusionData, terms: tuple[str, ...], *, temperature: float = 0.07,
                       match_ratio: float = 0.5, label_smoothing: float = 0.0):  # fmt: skip
    """Retrieval: `vtc` (ALPRO's contrastive loss) + `vtm` (matching on shuffled pairs); QA: `qa`, the answer
    classifier's cross-entropy (answers outside the training vocabulary ignored)."""
    allowed = ("qa",) if data.downstream == "qa" else ("vtc", "vtm")
    wrong = sorted(set(terms) - set(allowed))
    if wrong:
        raise ValueError(f"term(s) {', '.join(wrong)} do not apply to downstream {data.downstream!r}; "
                         f"it takes {', '.join(allowed)} (set the others to 0)")  # fmt: skip
    if data.downstream == "qa":
        objective = objective_of(AO.qa_terms, label_smoothing=label_smoothing)
        objective.count_items = (
            AO.answered
        )  # fit's accumulation: the mean is over the answers in the vocabulary
        return objective
    tok = data.tokenizer
    return objective_of(AO.pretrain_terms, mask_id=tok.mask_token_id, special_ids=special_token_ids(tok), terms=terms,
                        match_ratio=match_ratio, temperature=temperature)  # fmt: skip


def finetune_eval(data: AF.AVFusionData, val_idx: np.ndarray, *, rerank_k: int = 0):
    """`METRIC` on the fold's held-out videos: text→video mean recall within their gallery (retrieval), or
    overall accuracy of their questions (QA)."""
    held = data.held_out(val_idx)

    def eval_fn(model) -> dict:
        oof = P.predict_held(model, data, held, 0, rerank_k)
        return oof_breakdown(oof, data) | {METRIC: score_oof(oof, data)}

    return eval_fn


def predict_fold(model, data: AF.AVFusionData, val_idx: np.ndarray, fold: int, *, rerank_k: int = 0):
    """Out-of-fold predictions of the held-out videos. Retrieval: every (caption, gallery video) pair's
    score (`rerank_k` > 0: each caption's top k re-scored by ITM) as flat arrays text_id, clip, score,
    gt, fold, split, skipped; QA: question_id, probs (Q, answers), answer, answer_type, fold, split."""
    return P.predict_held(model, data, data.held_out(val_idx), fold, rerank_k)


def fold_table(oof: dict, data: AF.AVFusionData) -> pd.DataFrame:
    """Per fold (and all folds): the split scored, queries, gallery videos, unreadable videos, and the
    metrics (retrieval: R@K both ways, medianR, meanR; QA: overall and per-type accuracy)."""
    rows = []
    for fold in [*np.unique(oof["fold"]).tolist(), "all"]:
        part = oof if fold == "all" else {k: v[oof["fold"] == fold] for k, v in oof.items()}
        rows.append({"fold": fold, "split": ",".join(sorted(set(part["split"].tolist()))),
                     **MA.counts(part), **oof_breakdown(part, data)})  # fmt: skip
    return pd.DataFrame(rows)


def plot_fold(table: pd.DataFrame, title: str = ""):
    """Bars of the per-fold metrics (recall@K both ways, or accuracy per question type)."""
    cols = [c for c in table.columns if c.endswith(("_r1", "_r5", "_r10", "_acc"))]
    return plot_table_bars(table, cols, title=f"{title} ({table['split'].iloc[-1]} split)")


# --- out-of-fold scores and test predictions ----------------------------------------------------------


def score_oof(oof: dict, data: AF.AVFusionData) -> float:
    """Out-of-fold `METRIC`: the pair scores ranked within each fold's gallery, ranks pooled over folds
    (retrieval); or the answer probabilities' argmax (QA)."""
    return MA.oof_scores(oof)[METRIC]


def oof_breakdown(oof: dict, data: AF.AVFusionData) -> dict[str, float]:
    """Retrieval: t2v/v2t R@1/5/10 (fractions), medianR, meanR; QA: overall and per-type accuracy."""
    return {k: v for k, v in MA.oof_scores(oof).items() if k != METRIC}


def predict(models: list, data: AF.AVFusionData, split: str, *, rerank_k: int = 0,
            progress: bool = True) -> dict[str, np.ndarray]:  # fmt: skip
    """A split scored by a model's fold models. Retrieval: {ids (caption ids as text), text_ids, video_ids,
    sim (T, V): the folds' mean score}; QA: {ids, question_id, probs (Q, A): the folds' mean, answers}."""
    return P.predict_split(models, data, split, rerank_k=rerank_k, progress=progress)


def combine(predictions: list[dict], weights) -> dict:
    """The weighted sum (float64) of the models' pair scores (out-of-fold rows aligned by fold, caption
    and clip; test `sim` by caption id) or answer probabilities (aligned by question id)."""
    from vmmlib.ensemble import weighted_arrays

    first = predictions[0]
    if "sim" in first:  # test captions × the one gallery
        P.check_same(predictions, ("video_ids",))
        key, values = "ids", ("sim",)
    elif "score" in first:  # out-of-fold caption × video pairs
        key, values = ("fold", "text_id", "clip"), ("score",)
    else:  # questions: out-of-fold (with folds) or test, over one answer list
        P.check_same(predictions, ("answers",) if "answers" in first else ())
        key, values = ("fold", "question_id") if "fold" in first else "ids", ("probs",)
    return weighted_arrays(predictions, weights, key, values, what="rows", dtype=np.float64)


def write_predictions(out_dir: str | Path, prediction: dict, *, file_format: str = "jsonl",
                      top_k: int = 0) -> Path:  # fmt: skip
    """Written as `submission.<jsonl|csv>`: each caption's videos ranked by the (ensembled) score, or
    each question's answer by the (ensembled) probabilities; `top_k` ranked videos per caption (0: the
    whole gallery, which medianR / meanR need)."""
    from vmmlib.submissions import avfusion as fmt

    check_choice("file_format", file_format, fmt.FILE_FORMATS)
    path = Path(out_dir) / f"submission.{file_format}"
    if "sim" in prediction:
        order = np.argsort(-prediction["sim"], axis=1, kind="stable")[:, : top_k or None]
        video_ids = prediction["video_ids"]
        return fmt.write_rankings(
            path, prediction["text_ids"].tolist(), [video_ids[o].tolist() for o in order]
        )
    probs, answers = prediction["probs"], prediction["answers"]
    return fmt.write_answers(path, prediction["question_id"].tolist(), answers[probs.argmax(1)].tolist())


def required_ids(data: AF.AVFusionData, split: str) -> list[tuple[str, int]]:
    """("text", caption id) of every caption and ("question", question id) of every question of `split`
    (those whose annotation exists); a submission must hold all those of its kind."""
    from vmmlib.submissions import avfusion as fmt

    return fmt.required_ids(data_dir=data.root, split=split)
