"""Prediction of the avfusion task (`vmmlib.tasks.avfusion`): retrieval scores and QA probabilities
of fold models, and the flat out-of-fold arrays they make (scored by `vmmlib.metrics.avfusion`).

Retrieval: captions and gallery videos are encoded once (`vmmlib.predict.loop.predict_batches`), scored by
the cosine of their contrastive embeddings (test-time clips: the mean of the clips' cosines, ALPRO's
mean aggregation), and optionally re-scored in each caption's top k by the ITM head
(`vmmlib.metrics.retrieval.rerank_top_k` with `vmmlib.models.avfusion.itm_scorer`; the re-ranked
video's tokens are those of its middle test clip). Out-of-fold predictions are flat arrays, one row
per (caption, gallery video) pair of a fold, so folds with galleries of different sizes concatenate.
QA: the answer classifier's probabilities, averaged over clips and fold models.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vmmlib.data.avfusion.folder import SPLITS, RetrievalSplit, frames_of
from vmmlib.data.avfusion.reader import SkipLog, collate_avfusion
from vmmlib.metrics.retrieval import rerank_top_k
from vmmlib.options import check_choice
from vmmlib.predict.loop import predict_batches
from vmmlib.progress import progress as progress_bar


def progress(items, desc: str, enabled: bool):
    return progress_bar(items, desc=desc, disable=not enabled, leave=False)


def _net(model):
    return getattr(model, "module", model)


def _video_step(tokens: bool):
    """(B, E) mean normalised clip embedding, then (with `tokens`) the middle clip's flattened tokens."""

    def step(model, batch):
        net = _net(model)
        frames, K = frames_of(batch)
        audio = batch.get("audio") if net.audio is not None else None
        if audio is not None and K > 1:
            audio = audio.repeat_interleave(K, 0)
        enc = net.encode_video(frames, audio)
        emb = F.normalize(enc["video_embedding"].float(), dim=-1)
        emb = emb.view(-1, K, emb.shape[-1]).mean(1)  # (B·K, E) -> (B, E)
        if not tokens:
            return emb
        parts = [emb]
        for key in ("video_tokens", "audio_tokens"):
            if key in enc:
                t = enc[key].float()
                parts.append(t.view(-1, K, *t.shape[1:])[:, K // 2].flatten(1))
        return torch.cat(parts, 1)

    return step


def _text_step(tokens: bool):
    def step(model, batch):
        enc = _net(model).encode_text(batch["text_ids"], batch["text_mask"])
        emb = F.normalize(enc["text_embedding"].float(), dim=-1)
        return torch.cat([emb, enc["text_tokens"].float().flatten(1)], 1) if tokens else emb

    return step


def _gather(model, dataset, step, skips: SkipLog | None, desc: str, show: bool) -> np.ndarray:
    chunks = []
    for batch, out in predict_batches(model, dataset, step, batch_size=16, collate_fn=collate_avfusion,
                                      progress=show, desc=desc):  # fmt: skip
        if skips is not None:
            skips.update(batch)
        chunks.append(out)
    return np.concatenate(chunks)


def retrieval_scores(model, data, split: RetrievalSplit, videos, *, rerank_k: int = 0,
                     progress: bool = False) -> tuple[np.ndarray, SkipLog]:  # fmt: skip
    """float64 (T, V) caption × gallery-video scores by one model, and the unreadable videos counted.

    Args:
        split: the captions and gallery (`split.clips`, in `videos` order).
        videos: a dataset of the gallery videos (`data.videos(...)` or a manifest dataset).
        rerank_k: re-score each caption's top k by the ITM positive probability (0: cosine only).
    """
    from vmmlib.models.avfusion import itm_scorer

    skips, net, tokens = SkipLog(), _net(model), rerank_k > 0
    texts = data.texts(split.captions, split.text_ids)
    t = _gather(model, texts, _text_step(tokens), None, "captions", progress)
    v = _gather(model, videos, _video_step(tokens), skips, "videos", progress)
    E = net.cfg.embed_dim
    sim = t[:, :E].astype(np.float64) @ v[:, :E].astype(np.float64).T
    if not tokens:
        return sim, skips
    device = next(net.parameters()).device
    L, Dv = data.max_text_len, net.video.config.hidden_size
    text_tokens = torch.from_numpy(t[:, E:]).view(len(t), L, -1).to(device)
    video_tokens = torch.from_numpy(v[:, E : E + net.video_tokens * Dv]).view(len(v), net.video_tokens, Dv)
    cached = {"video_tokens": video_tokens.to(device)}
    if net.audio is not None:
        cached["audio_tokens"] = torch.from_numpy(v[:, E + net.video_tokens * Dv :]).view(
            len(v), -1, net.audio.config.hidden_size).to(device)  # fmt: skip
    mask = torch.from_numpy(texts.text_mask).to(device)
    state = net.training
    net.eval()
    try:
        sim = rerank_top_k(
            sim, min(rerank_k, sim.shape[1]), itm_scorer(net, {"text_tokens": text_tokens}, mask, cached)
        )
    finally:
        net.train(state)
    return sim, skips


def _unreadable(skips: SkipLog, videos) -> set[str]:
    paths = (
        {str(videos.path(i)): c for i, c in enumerate(videos.clip_names)}
        if hasattr(videos, "clip_names")
        else {}
    )
    return {paths.get(p, p) for p in skips.paths}


def pair_arrays(sim: np.ndarray, split: RetrievalSplit, fold: int, split_name: str, skips: SkipLog,
                videos=None) -> dict[str, np.ndarray]:  # fmt: skip
    """Flat out-of-fold arrays, one row per (caption, gallery video): text_id, clip, score, gt, fold,
    split, skipped (the video was unreadable)."""
    T, V = sim.shape
    bad = _unreadable(skips, videos) if videos is not None else {p for p in skips.paths}
    clips = np.asarray(split.clips, dtype=str)
    gt = np.zeros((T, V), bool)
    gt[np.arange(T), split.text_to_video] = True
    return {
        "text_id": np.repeat(split.text_ids, V).astype(np.int64),
        "clip": np.tile(clips, T),
        "score": sim.reshape(-1).astype(np.float32),
        "gt": gt.reshape(-1),
        "fold": np.full(T * V, fold, np.int64),
        "split": np.full(T * V, split_name),
        "skipped": np.tile(np.isin(clips, sorted(bad)), T),
    }


def qa_step(model, batch):
    """(B, A) answer probabilities, averaged over a video's test clips."""
    frames, K = frames_of(batch)
    audio = batch.get("audio") if _net(model).audio is not None else None
    ids, mask = batch["text_ids"], batch["text_mask"]
    if K > 1:
        ids, mask = ids.repeat_interleave(K, 0), mask.repeat_interleave(K, 0)
        audio = None if audio is None else audio.repeat_interleave(K, 0)
    probs = model(frames=frames, text_ids=ids, text_mask=mask, audio=audio)["qa_logits"].float().softmax(-1)
    return probs.view(-1, K, probs.shape[-1]).mean(1)


def qa_probabilities(
    models, data, records: list[dict], *, progress: bool = False
) -> tuple[np.ndarray, SkipLog]:
    """float32 (Q, A) answer probabilities (mean over `models`) and the unreadable videos counted."""
    skips = SkipLog()
    probs = _gather(models, data.qa_items(records, train=False), qa_step, skips, "questions", progress)
    return probs, skips


def qa_arrays(probs, records, answers, fold: int, split_name: str, skips: SkipLog) -> dict[str, np.ndarray]:
    """Out-of-fold QA arrays: question_id, probs, label (−100 outside the vocabulary), answer_type,
    fold, split, skipped."""
    Q = len(records)
    bad = {p.rsplit("/", 1)[-1].rsplit(".", 1)[0] for p in skips.paths}
    return {
        "question_id": np.array([r["question_id"] for r in records], np.int64),
        "probs": np.asarray(probs, np.float32).reshape(Q, -1),
        "label": np.array([answers.label(r["answer"]) for r in records], np.int64),
        "answer_type": np.array([r["answer_type"] for r in records], dtype=str),
        "fold": np.full(Q, fold, np.int64),
        "split": np.full(Q, split_name),
        "skipped": np.array([str(r["video_id"]) in bad for r in records], bool),
    }


def check_same(predictions: list[dict], keys) -> tuple:
    """The arrays `keys` of the first model's predictions, checked equal in every other's."""
    for p in predictions[1:]:
        for k in keys:
            if not np.array_equal(p[k], predictions[0][k]):
                raise ValueError(
                    f"the models' test predictions differ in {k}: predict one split with one data option set"
                )
    return tuple(predictions[0][k] for k in keys)


def predict_held(model, data, held, fold: int, rerank_k: int) -> dict[str, np.ndarray]:
    """Out-of-fold arrays of held-out items (`data.held_out`) by one model (`pair_arrays`, `qa_arrays`)."""
    if data.downstream == "retrieval":
        videos = data.videos(held.clips)
        sim, skips = retrieval_scores(model, data, held, videos, rerank_k=rerank_k)
        return pair_arrays(sim, held, fold, data.holdout_split, skips, videos)
    probs, skips = qa_probabilities([model], data, held)
    return qa_arrays(probs, held, data.answers, fold, data.holdout_split, skips)


def predict_split(
    models: list, data, split: str, *, rerank_k: int = 0, progress: bool = True
) -> dict[str, np.ndarray]:
    """A split scored by a model's fold models. Retrieval: {ids (caption ids as text), text_ids, video_ids,
    sim (T, V): the folds' mean score}; QA: {ids, question_id, probs (Q, A): the folds' mean, answers}."""
    check_choice("split", split, SPLITS)
    if data.downstream == "retrieval":
        held = data.retrieval(split)
        videos = data.videos(held.clips)
        sims = [
            retrieval_scores(m, data, held, videos, rerank_k=rerank_k, progress=progress)[0] for m in models
        ]
        return {"ids": held.text_ids.astype(str), "text_ids": held.text_ids, "video_ids": np.asarray(held.clips, str),
                "sim": np.mean(sims, 0).astype(np.float32)}  # fmt: skip
    records = data.qa(split)
    probs, _ = qa_probabilities(models, data, records, progress=progress)
    ids = np.array([r["question_id"] for r in records], np.int64)
    return {
        "ids": ids.astype(str),
        "question_id": ids,
        "probs": probs,
        "answers": np.asarray(data.answers.answers, str),
    }
