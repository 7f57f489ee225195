"""An opened WBDC 2022 data folder (`load` → `WBDCData`): the splits, the tokenizer and the reader
options, and the datasets the task's notebooks train and predict on (SPEC §1.2).

`load(data_dir, **data_options)` reads the annotation JSONs once and opens each split's frame source
(feature zip, raw-frame zips, or none). Items come from `vmmlib.data.wbdc.reader.WBDCDataset`, padded here
to fixed text lengths (`text_mask`, and `title_mask`/`context_mask` for the pretraining views), so
the default DataLoader collation — the one the notebooks' `make_loader` uses — batches them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vmmlib.data.tokenize import tokenizer_for
from vmmlib.data.wbdc.reader import (
    FOLD_SEED,
    FRAME_SAMPLINGS,
    MAX_FRAMES,
    NONFINITE,
    TEXT_FIELDS,
    WBDCDataset,
    check_layout,
    default_vocab,
    label_of,
    open_split,
    stratified_folds,
)
from vmmlib.io.safe import InputError
from vmmlib.io.wbdc_categories import NUM_LV2
from vmmlib.options import check_choice

FRAME_SOURCES = ("features", "raw", "none")


class PaddedItems(Dataset):
    """A `WBDCDataset` whose id sequences are padded to fixed lengths (+ their 0/1 masks), so that
    torch's default collation batches the items: `text_ids`/`text_mask` (max_text_len,) int64, and
    with ICT texts `title_ids`/`title_mask` (max_title_len,) and `context_ids`/`context_mask`."""

    def __init__(self, items: WBDCDataset):
        self.items = items
        self.ids = items.ids
        self.labels = items.labels
        self.lengths = {
            "text": items.max_text_len,
            "title": items.max_title_len,
            "context": items.max_text_len,
        }

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.items[i])
        for key, length in self.lengths.items():
            if f"{key}_ids" in item:
                seq = torch.as_tensor(item[f"{key}_ids"][:length], dtype=torch.long)
                ids = torch.zeros(length, dtype=torch.long)  # [PAD] is id 0 in BERT vocabularies
                mask = torch.zeros(length, dtype=torch.long)
                ids[: len(seq)], mask[: len(seq)] = seq, 1
                item[f"{key}_ids"], item[f"{key}_mask"] = ids, mask
        return item


@dataclass
class WBDCData:
    """An opened WBDC folder: annotation entries and frame sources per split, and reader options."""

    data_dir: Path
    tokenizer: object
    splits: dict[str, dict]  # split -> {"entries", "features", "raw_frames"} (`open_split`)
    max_frames: int = MAX_FRAMES
    frame_sampling: str = "uniform"
    text_fields: str = "title+ocr+asr"
    max_text_len: int = 256
    max_title_len: int = 64
    nonfinite: str = "zero"
    pretrain_splits: tuple[str, ...] = ("unlabeled", "labeled")
    pretrain_eval_videos: int = 200
    labels: np.ndarray = field(init=False)  # (N,) lv2 ids of the labelled videos

    def __post_init__(self):
        self.labels = np.array([label_of(e) for e in self.splits["labeled"]["entries"]], np.int64)

    def ids(self, split: str) -> list[str]:
        return [str(e["id"]) for e in self.split(split)["entries"]]

    def split(self, split: str) -> dict:
        if split not in self.splits:
            raise ValueError(f"unknown split {split!r}; this folder has {', '.join(self.splits)}")
        return self.splits[split]

    def dataset(
        self, split: str, rows: Sequence[int] | None = None, *, train: bool = False, ict: bool = False
    ) -> PaddedItems:
        """The items of `split` (the `rows` of its annotation list; all by default), padded.

        Args:
            train: random sorted frame subsets (the baseline's train mode), else `frame_sampling`.
            ict: also the title and ocr+asr views (`title_ids`, `context_ids`) of ICT/CLIP pretraining.
        """
        source = self.split(split)
        entries = source["entries"] if rows is None else [source["entries"][i] for i in rows]
        return PaddedItems(
            WBDCDataset(
                entries, self.tokenizer, features=source["features"], raw_frames=source["raw_frames"],
                max_frames=self.max_frames, frame_sampling=self.frame_sampling, train=train,
                text_fields=self.text_fields, max_text_len=self.max_text_len, ict_texts=ict,
                max_title_len=self.max_title_len, nonfinite=self.nonfinite,
            )
        )  # fmt: skip

    def folds(self, n_folds: int, fold: int, seed: int = FOLD_SEED) -> tuple[np.ndarray, np.ndarray]:
        """(train, val) indices of the labelled videos: rank 8's stratified lv2 folds."""
        return stratified_folds(self.labels, n_folds, fold, seed=seed)

    def pretrain_parts(self) -> tuple[list[tuple[str, np.ndarray]], tuple[str, np.ndarray]]:
        """([(split, rows) trained on], (split, rows) held out for `pretrain_eval`): the held-out
        videos are the last `pretrain_eval_videos` of the first pretraining split."""
        first = self.pretrain_splits[0]
        n = len(self.split(first)["entries"])
        held = min(self.pretrain_eval_videos, n // 5)
        train = [(first, np.arange(n - held))]
        train += [(s, np.arange(len(self.split(s)["entries"]))) for s in self.pretrain_splits[1:]]
        return train, (first, np.arange(n - held, n))

    def model_overrides(self, text_model_dir: str = "") -> dict:
        """What a model must match in this data: the 200 lv2 classes and the vocabulary size (a loaded
        text model brings its own)."""
        return {"num_classes": NUM_LV2, **({} if text_model_dir else {"vocab_size": len(self.tokenizer)})}


def _frame_source(data_dir, split: str, found: dict, frames: str, allow_text_only: bool) -> str:
    """`frames`, or "none" for a split that lacks that source when text only is allowed."""
    missing = {"features": found["features"] is None, "raw": found["frames"] is None}.get(frames, False)
    if not missing:
        return frames
    if allow_text_only:
        return "none"
    where = Path(data_dir) / ("zip_feats" if frames == "features" else "zip_frames")
    raise InputError(
        where / (f"{split}.zip" if frames == "features" else split),
        f"not found: the {split} videos would have no frames; pass data_options allow_text_only=True "
        "to train and predict on their text alone, or frames='none'",
    )


def load(
    data_dir: str | Path,
    *,
    text_model_dir: str | Path = "",
    vocab_path: str | Path | None = None,
    frames: str = "features",
    max_frames: int = MAX_FRAMES,
    frame_sampling: str = "uniform",
    text_fields: str = "title+ocr+asr",
    max_text_len: int = 256,
    max_title_len: int = 64,
    nonfinite: str = "zero",
    pretrain_splits: Sequence[str] | None = None,
    pretrain_eval_videos: int = 200,
    allow_text_only: bool = False,
) -> WBDCData:
    """Open a WBDC data folder (the notebooks' `data_options` are these keyword arguments).

    Args:
        text_model_dir: a local Hugging Face BERT (e.g. chinese-macbert-base); its tokenizer is used,
            else `vocab_path` (default: the folder's `vocab.txt`).
        frames: "features" (`zip_feats`), "raw" (`zip_frames`, JPEGs for a vision tower) or "none".
        max_frames, frame_sampling, text_fields, max_text_len, max_title_len, nonfinite: see
            `vmmlib.data.wbdc.reader.WBDCDataset` (rank 8: 32 frames, title+ocr+asr in 256 tokens; the
            baseline: title in 50).
        pretrain_splits: the splits pretraining reads (rank 8: the 1M unlabeled videos); None: those of
            unlabeled and labeled that the folder holds (a fine-tune needs no unlabeled split).
        pretrain_eval_videos: videos of the first pretraining split held out to score pretraining.
        allow_text_only: a split with annotations but no frame source (`zip_feats/{split}.zip` or
            `zip_frames/{split}/` missing) is an InputError naming it, unless this is True: then its
            videos use text only, with one warning naming the splits.
    """
    check_choice("frames", frames, FRAME_SOURCES)
    check_choice("frame_sampling", frame_sampling, FRAME_SAMPLINGS)
    check_choice("text_fields", text_fields, TEXT_FIELDS)
    check_choice("nonfinite", nonfinite, NONFINITE)
    layout = check_layout(data_dir)
    if pretrain_splits is None:
        pretrain_splits = [s for s in ("unlabeled", "labeled") if s in layout]
    for s in pretrain_splits:
        check_choice("pretrain split", s, layout)
    splits = {name: open_split(data_dir, name, frames=_frame_source(data_dir, name, found, frames, allow_text_only))
              for name, found in layout.items()}  # fmt: skip
    text_only = [
        n for n, s in splits.items() if frames != "none" and s["features"] is None and s["raw_frames"] is None
    ]
    if text_only:
        warnings.warn(
            f"allow_text_only: the videos of split(s) {', '.join(text_only)} have no {frames} frames in "
            f"{data_dir} and use text only",
            stacklevel=2,
        )
    return WBDCData(
        data_dir=Path(data_dir),
        tokenizer=tokenizer_for(text_model_dir, vocab_path or default_vocab(data_dir)),
        splits=splits,
        max_frames=max_frames,
        frame_sampling=frame_sampling,
        text_fields=text_fields,
        max_text_len=max_text_len,
        max_title_len=max_title_len,
        nonfinite=nonfinite,
        pretrain_splits=tuple(pretrain_splits),
        pretrain_eval_videos=pretrain_eval_videos,
    )
