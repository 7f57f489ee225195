"""Out-of-fold scores of the avfusion task (`vmmlib.tasks.avfusion`): retrieval recall@K both ways
(ALPRO's evaluator: 1-indexed ranks, recall as a fraction here) and QA accuracy per question type, of
one model's or a weighted ensemble's flat out-of-fold arrays (one row per (caption, gallery video)
pair of a fold, or per question), the folds' galleries ranked apart and their ranks pooled.
"""

from __future__ import annotations

import numpy as np

from vmmlib.metrics.retrieval import gt_ranks, qa_accuracy, rank_metrics

METRIC = "score"  # retrieval: text→video mean recall (fraction); QA: overall accuracy (fraction)


def align_oofs(oofs: list[dict]) -> dict:
    """Sort every model's out-of-fold rows into one order (checked equal) and cut the folds' blocks."""
    if "probs" in oofs[0]:
        order = [np.lexsort((o["question_id"], o["fold"])) for o in oofs]
        _check_rows(oofs, order, ("fold", "question_id"))
        o = oofs[0]
        return {"kind": "qa", "probs": [m["probs"][i] for m, i in zip(oofs, order)], "label": o["label"][order[0]],
                "answer_type": o["answer_type"][order[0]]}  # fmt: skip
    order = [np.lexsort((o["clip"], o["text_id"], o["fold"])) for o in oofs]
    _check_rows(oofs, order, ("fold", "text_id", "clip"))
    fold, text, gt = (oofs[0][k][order[0]] for k in ("fold", "text_id", "gt"))
    blocks, start = [], 0
    for f in np.unique(fold):
        n = int((fold == f).sum())
        T = len(np.unique(text[start : start + n]))
        V = n // T
        g = gt[start : start + n].reshape(T, V)
        if T * V != n or not (g.sum(1) == 1).all():
            raise ValueError(
                f"fold {f}: out-of-fold pairs are not a full caption × video grid with one ground truth each"
            )
        blocks.append((slice(start, start + n), T, V, g.argmax(1)))
        start += n
    return {"kind": "retrieval", "scores": [m["score"][i] for m, i in zip(oofs, order)], "blocks": blocks}


def _check_rows(oofs, order, keys) -> None:
    for o, idx in zip(oofs[1:], order[1:]):
        if any(not np.array_equal(o[k][idx], oofs[0][k][order[0]]) for k in keys):
            raise ValueError(
                "the models' out-of-fold rows differ: use the same folds and data options for every model"
            )


def score_aligned(aligned: dict, weights) -> dict[str, float]:
    """METRIC and the breakdown of the weighted ensemble of aligned out-of-fold predictions."""
    if aligned["kind"] == "qa":
        probs = sum(w * p.astype(np.float64) for w, p in zip(weights, aligned["probs"]))
        # the types asked here only (`vmm evaluate`, as ALPRO's evaluator, also prints absent ones as 0)
        acc = qa_accuracy(
            probs.argmax(1).astype(str),
            aligned["label"].astype(str),
            aligned["answer_type"].tolist(),
            types=(),
        )
        out = {k: v / 100 for k, v in acc.items() if k != "ratios"}
        return {METRIC: out.pop("overall_acc"), "overall_acc": acc["overall_acc"] / 100, **out}
    t2v, v2t = [], []
    for part, T, V, gt in aligned["blocks"]:
        sim = sum(w * s[part].astype(np.float64) for w, s in zip(weights, aligned["scores"])).reshape(T, V)
        a, b = ranks(sim, gt)
        t2v.append(a)
        v2t.append(b)
    return recall_metrics(np.concatenate(t2v), np.concatenate(v2t))


def ranks(sim: np.ndarray, text_to_video: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-indexed text→video ranks (T,) and video→text ranks (best caption) of the captioned videos."""
    t2v = gt_ranks(sim, list(text_to_video))
    captions: list[list[int]] = [[] for _ in range(sim.shape[1])]
    for t, v in enumerate(text_to_video):
        captions[int(v)].append(t)
    queries = [v for v, c in enumerate(captions) if c]
    return t2v, gt_ranks(sim.T[queries], [captions[v] for v in queries])


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
