"""Competition metrics as pure functions on arrays, matching each official evaluator exactly.

- `qqbrowser`: QQ Browser 2021 Spearman rho over embedding cosines (SPEC §2.1).
- `yt8m`: YouTube-8M GAP@20, per-class mAP, Hit@1, PERR (2017/2018) and segment mAP@100K (2019)
  (SPEC §2.3), with the official tie order reproduced (`_official_ties`).
"""

from .qqbrowser import MissingIdError, pair_cosine, qq_spearman, read_label_tsv
from .yt8m import (
    KAGGLE_HEADER,
    average_precision,
    class_average_precisions,
    gap,
    hit_at_one,
    perr,
    read_kaggle_csv,
    read_segment_truth,
    segment_class_average_precisions,
    segment_map,
    top_k_indices,
    video_map,
    write_kaggle_csv,
)

__all__ = [
    "KAGGLE_HEADER",
    "MissingIdError",
    "average_precision",
    "class_average_precisions",
    "gap",
    "hit_at_one",
    "pair_cosine",
    "perr",
    "qq_spearman",
    "read_kaggle_csv",
    "read_label_tsv",
    "read_segment_truth",
    "segment_class_average_precisions",
    "segment_map",
    "top_k_indices",
    "video_map",
    "write_kaggle_csv",
]
