"""Task `qqbrowser`: QQ Browser 2021 multimodal video similarity (seed 000).

Data: `vmmlib.data.qqbrowser` (the real layout); sample data: `vmmlib.data.sample_qqbrowser`;
target: tags (pretraining) and pair similarity (fine-tuning); metric: Spearman of cosine vs label.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from vmmlib.data import qqbrowser as qq
from vmmlib.data.sample_qqbrowser import write_qqbrowser_sample
from vmmlib.explore import ExploreReport
from vmmlib.io import read_examples

NAME = "qqbrowser"


def make_sample(out_dir: str | Path, **options) -> Path:
    """Write sample data in the real layout (see `write_qqbrowser_sample` for the options)."""
    return write_qqbrowser_sample(out_dir, **options)


def explore(data_dir: str | Path, *, max_items_per_split: int | None = None, progress: bool = True) -> ExploreReport:
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
        [splits, pd.DataFrame([{"split": "pairs (label.tsv)", "files": 1, "items": len(pairs)}])], ignore_index=True
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
