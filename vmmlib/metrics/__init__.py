"""Competition metrics as pure functions on arrays, matching each official evaluator exactly.

- `qqbrowser`: QQ Browser 2021 Spearman rho over embedding cosines (SPEC §2.1).
- `yt8m`: YouTube-8M GAP@20, per-class mAP, Hit@1, PERR (2017/2018) and segment mAP@100K (2019)
  (SPEC §2.3), with the official tie order reproduced (`_official_ties`).

The names below load their module on first use, so `import vmmlib.metrics.yt8m` does not pay for
scipy and pandas (which `qqbrowser` needs): `vmm validate` stays fast.
"""

import importlib

_QQ = ("MissingIdError", "pair_cosine", "qq_spearman", "read_label_tsv")
_YT8M = (
    "KAGGLE_HEADER",
    "RatedEntries",
    "average_precision",
    "class_average_precisions",
    "gap",
    "hit_at_one",
    "perr",
    "rated_map",
    "read_kaggle_csv",
    "read_segment_truth",
    "segment_class_average_precisions",
    "segment_map",
    "top_k_indices",
    "video_map",
    "write_kaggle_csv",
)
_RETRIEVAL = (
    "gt_ranks",
    "retrieval_metrics",
    "text_video_retrieval",
    "rerank_top_k",
    "aggregate_clip_scores",
    "qa_accuracy",
)
_LAZY = {
    **{name: "vmmlib.metrics.qqbrowser" for name in _QQ},
    **{name: "vmmlib.metrics.yt8m" for name in _YT8M},
    **{
        name: "vmmlib.metrics.wbdc" for name in ("f1_mean", "f1_mean_from_probs", "per_class_f1")
    },  # WBDC (SPEC §2.2)
    **dict.fromkeys(("recall_at_k", "gallery_recall", "gallery_ranks"), "vmmlib.metrics.muge"),  # MUGE
    **dict.fromkeys(_RETRIEVAL, "vmmlib.metrics.retrieval"),  # avfusion: ALPRO R@K / medianR / meanR, QA
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
