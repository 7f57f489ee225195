"""Out-of-fold scores of the avfusion task (`vmmlib.tasks.avfusion`): retrieval recall@K both ways
(ALPRO's evaluator: 1-indexed ranks, recall as a fraction here) and QA accuracy per question type, of
one model's (or one `combine`d ensemble's) flat out-of-fold arrays (one row per (caption, gallery
video) pair of a fold, or per question), the folds' galleries ranked apart and their ranks pooled.
"""

from __future__ import annotations

import numpy as np

from vmmlib.metrics.retrieval import gt_ranks, qa_accuracy, rank_metrics, video_to_text_gt

METRIC = "score"  # retrieval: text→video mean recall (fraction); QA: overall accuracy (fraction)


def oof_scores(oof: dict) -> dict[str, float]:
    """METRIC and the breakdown of one model's (or a `combine`d ensemble's) out-of-fold predictions: QA
    accuracy of the probabilities' argmax; or the pair scores ranked within each fold's caption × video
    grid, the ranks pooled over folds. (Rows of several models are aligned by id in `combine`.)"""
    if "probs" in oof:
        order = np.lexsort((oof["question_id"], oof["fold"]))
        # the types asked here only (`vmm evaluate`, as ALPRO's evaluator, also prints absent ones as 0)
        acc = qa_accuracy(
            oof["probs"][order].astype(np.float64).argmax(1).astype(str),
            oof["label"][order].astype(str),
            oof["answer_type"][order].tolist(),
            types=(),
        )
        out = {k: v / 100 for k, v in acc.items() if k != "ratios"}
        return {METRIC: out.pop("overall_acc"), "overall_acc": acc["overall_acc"] / 100, **out}
    order = np.lexsort((oof["clip"], oof["text_id"], oof["fold"]))
    fold, text, gt, score = (oof[k][order] for k in ("fold", "text_id", "gt", "score"))
    t2v, v2t, start = [], [], 0
    for f in np.unique(fold):
        n = int((fold == f).sum())
        T = len(np.unique(text[start : start + n]))
        V = n // T
        g = gt[start : start + n].reshape(T, V)
        if T * V != n or not (g.sum(1) == 1).all():
            raise ValueError(
                f"fold {f}: out-of-fold pairs are not a full caption × video grid with one ground truth each"
            )
        a, b = ranks(score[start : start + n].astype(np.float64).reshape(T, V), g.argmax(1))
        t2v.append(a)
        v2t.append(b)
        start += n
    return recall_metrics(np.concatenate(t2v), np.concatenate(v2t))


def ranks(sim: np.ndarray, text_to_video: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-indexed text→video ranks (T,) and video→text ranks (best caption) of the captioned videos."""
    captions = video_to_text_gt(text_to_video, sim.shape[1])
    queries = [v for v, c in enumerate(captions) if c]
    return gt_ranks(sim, list(text_to_video)), gt_ranks(sim.T[queries], [captions[v] for v in queries])


def recall_metrics(t2v: np.ndarray, v2t: np.ndarray) -> dict[str, float]:
    """score (text→video mean recall, fraction), t2v_/v2t_ r1, r5, r10 (fractions), medianR, meanR."""
    out = {}
    for name, r in (("t2v", t2v), ("v2t", v2t)):
        m = rank_metrics(r, scale=1.0)
        out.update({f"{name}_r{k}": m[f"r{k}"] for k in (1, 5, 10)})
        out.update({f"{name}_medianR": m["medianR"], f"{name}_meanR": m["meanR"]})
    return {METRIC: (out["t2v_r1"] + out["t2v_r5"] + out["t2v_r10"]) / 3, **out}


def counts(part: dict) -> dict[str, int]:
    """Queries, gallery videos and unreadable videos of out-of-fold rows."""
    if "probs" in part:
        return {"queries": len(part["question_id"]), "skipped": int(part["skipped"].sum())}
    videos = {(f, c) for f, c in zip(part["fold"].tolist(), part["clip"].tolist())}
    bad = {
        (f, c) for f, c, s in zip(part["fold"].tolist(), part["clip"].tolist(), part["skipped"].tolist()) if s
    }
    return {"queries": len(set(zip(part["fold"].tolist(), part["text_id"].tolist()))), "videos": len(videos),
            "skipped": len(bad)}  # fmt: skip
