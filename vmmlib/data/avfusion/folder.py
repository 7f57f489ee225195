"""An opened avfusion data folder (`vmmlib.tasks.avfusion.load`): annotations, tokenizer, clip readers
and the datasets the task trains and predicts on.

    data_dir/train.csv, validation.csv     seed 004 manifests (video,audio,text) → pretraining
    data_dir/retrieval/<split>.jsonl       ALPRO {"caption", "clip_name"} → text↔video retrieval
    data_dir/qa/<split>.jsonl              ALPRO {"question", "answer", "video_id", "answer_type"} → QA
    data_dir/qa/train_ans2label.json       the answer vocabulary (else built from qa/train.jsonl)
    data_dir/videos/, audio/, text/        the media (roots are options); tokenizer/ (optional)

The downstream (`retrieval` or `qa`) is a reader option. Folds hold out whole training clips
(`scheme="clips"`: a seeded k-fold of the training split's videos, so no caption or question of a
held-out video is trained on), or use the validation split as the single fold (`scheme="val"`,
n_folds = 1, ALPRO's protocol); `holdout_split` records which split the held-out indices point
into, and every report names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vmmlib.data.avfusion.reader import (
    AnswerVocab,
    AVFusionDataset,
    ClipReader,
    QADataset,
    VideoDataset,
    read_manifest,
    read_qa_annotations,
    read_retrieval_annotations,
)
from vmmlib.data.tokenize import encode_texts
from vmmlib.io.safe import InputError, inside, read_text
from vmmlib.options import check_choice

DOWNSTREAMS = ("retrieval", "qa")
FOLD_SCHEMES = ("clips", "val")
MANIFESTS = {"train": "train.csv", "validation": "validation.csv"}
SPLITS = ("train", "val", "test")


@dataclass
class RetrievalSplit:
    """One retrieval split: captions, the distinct clips (gallery), caption → clip index, caption ids."""

    captions: list[str]
    clips: list[str]
    text_to_video: np.ndarray  # (T,) int64 index into clips
    text_ids: np.ndarray  # (T,) int64: the caption's line number in the jsonl (its id in submissions)

    def subset(self, clip_idx: np.ndarray) -> RetrievalSplit:
        """The captions of the given clips, with those clips as the gallery (in `clip_idx` order)."""
        where = {int(c): j for j, c in enumerate(np.asarray(clip_idx))}
        keep = np.array([int(v) in where for v in self.text_to_video], bool)
        return RetrievalSplit(
            [c for c, k in zip(self.captions, keep) if k],
            [self.clips[int(c)] for c in clip_idx],
            np.array([where[int(v)] for v in self.text_to_video[keep]], np.int64),
            self.text_ids[keep],
        )


class TextItems(Dataset):
    """Tokenised texts → {"text_ids", "text_mask", "id"} items (for encoding captions / questions)."""

    def __init__(self, text_ids: np.ndarray, text_mask: np.ndarray, ids):
        self.text_ids, self.text_mask, self.ids = text_ids, text_mask, list(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"text_ids": self.text_ids[i], "text_mask": self.text_mask[i], "id": str(self.ids[i])}


class TrainItems(Dataset):
    """Training items of a robust dataset, restricted to `indices`, with `skipped` as one string per
    item ("path: reason; ..." or "") so the default collate (the notebooks' loader) batches them."""

    def __init__(self, base: Dataset, indices: np.ndarray | None = None):
        self.base = base
        self.indices = np.arange(len(base)) if indices is None else np.asarray(indices, np.int64)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.base[int(self.indices[i])])
        item["skipped"] = "; ".join(f"{p}: {r}" for p, r in item.get("skipped", []))
        return {k: v for k, v in item.items() if k != "answer_type"}


class AVFusionData:
    """An avfusion data folder opened with its reader options (see `vmmlib.tasks.avfusion.load`)."""

    def __init__(self, root: str | Path, *, tokenizer, reader: ClipReader, eval_reader: ClipReader,
                 downstream: str, max_text_len: int, max_train_samples: int, max_eval_samples: int,
                 with_audio: bool, title_only: bool, audio_source: str, video_ext: str, seed: int):  # fmt: skip
        check_choice("downstream", downstream, DOWNSTREAMS)
        self.root = Path(root)
        self.tokenizer, self.reader, self.eval_reader = tokenizer, reader, eval_reader
        self.downstream, self.max_text_len = downstream, max_text_len
        self.max_train_samples, self.max_eval_samples = max_train_samples or None, max_eval_samples or None
        self.with_audio, self.title_only, self.audio_source = with_audio, title_only, audio_source
        self.video_ext, self.seed = video_ext, seed
        self.video_root = self.root / "videos"
        self.holdout_split = "train"  # set by `fold_indices`: the split held-out indices point into

    # --- annotations ---------------------------------------------------------------------------------

    def _limit(self, split: str) -> int | None:
        return self.max_train_samples if split == "train" else self.max_eval_samples

    def manifest(self, split: str):
        check_choice("manifest", split, MANIFESTS)
        path = self.root / MANIFESTS[split]
        if not path.is_file():
            raise InputError(
                path, f"not found: an avfusion folder (data_dir) has {', '.join(MANIFESTS.values())}"
            )
        return read_manifest(path, self._limit("train" if split == "train" else "val"))

    def retrieval(self, split: str) -> RetrievalSplit:
        check_choice("retrieval split", split, SPLITS)
        if split not in self._retrieval:
            path = self.root / "retrieval" / f"{split}.jsonl"
            captions, clips, t2v = read_retrieval_annotations(path, self._limit(split))
            self._retrieval[split] = RetrievalSplit(captions, clips, t2v, np.arange(len(captions)))
        return self._retrieval[split]

    def qa(self, split: str) -> list[dict]:
        check_choice("QA split", split, SPLITS)
        if split not in self._qa:
            records = read_qa_annotations(self.root / "qa" / f"{split}.jsonl", self._limit(split))
            self._qa[split] = [{**r, "question_id": i} for i, r in enumerate(records)]
        return self._qa[split]

    @cached_property
    def _retrieval(self) -> dict:
        return {}

    @cached_property
    def _qa(self) -> dict:
        return {}

    @cached_property
    def answers(self) -> AnswerVocab:
        """ALPRO's `train_ans2label.json`, else the training split's answers (most frequent first)."""
        path = self.root / "qa" / "train_ans2label.json"
        if path.exists() or path.is_symlink():  # present but not a readable file: an error, not a fallback
            return AnswerVocab.read(path)
        return AnswerVocab.from_answers([r["answer"] for r in self.qa("train")])

    def num_classes(self) -> int:
        return len(self.answers) if self.downstream == "qa" else 0

    # --- folds ---------------------------------------------------------------------------------------

    def fold_videos(self) -> list[str]:
        """The training split's videos of the downstream (clips of retrieval, video ids of QA)."""
        if self.downstream == "retrieval":
            return self.retrieval("train").clips
        return list(dict.fromkeys(str(r["video_id"]) for r in self.qa("train")))

    def fold_indices(self, n_folds: int, fold: int, scheme: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(training video indices, held-out indices) of a fold; sets `holdout_split`."""
        check_choice("fold scheme", scheme, FOLD_SCHEMES)
        videos = self.fold_videos()
        if scheme == "val":
            if n_folds != 1 or fold != 0:
                raise ValueError(
                    f"scheme 'val' has one fold (the val split): use n_folds=1, fold=0, not {n_folds}, {fold}"
                )
            self.holdout_split = "val"
            held = self.retrieval("val").clips if self.downstream == "retrieval" else self.qa("val")
            return np.arange(len(videos)), np.arange(len(held))
        if not 0 <= fold < n_folds or n_folds < 2:
            raise ValueError(
                f"scheme 'clips' needs n_folds ≥ 2 and 0 ≤ fold < n_folds, got {n_folds}, {fold}"
            )
        self.holdout_split = "train"
        order = np.random.default_rng(seed).permutation(len(videos))
        held = np.sort(order[fold::n_folds])
        return np.setdiff1d(np.arange(len(videos)), held), held

    # --- datasets ------------------------------------------------------------------------------------

    def pretrain_items(self) -> AVFusionDataset:
        """The training manifest's (video, audio, text) triples, random clips."""
        return self._manifest_dataset("train", train=True)

    def _manifest_dataset(self, split: str, train: bool) -> AVFusionDataset:
        return AVFusionDataset(
            self.manifest(split), self.video_root, self.root / "audio", self.root / "text",
            self.reader if train else self.eval_reader, self.tokenizer, max_text_len=self.max_text_len,
            train=train, title_only=self.title_only, audio_source=self.audio_source,
            with_audio=self.with_audio, seed=self.seed,
        )  # fmt: skip

    def manifest_retrieval(self, split: str = "validation") -> tuple[RetrievalSplit, AVFusionDataset]:
        """A manifest as a retrieval set: each text file is the caption of its own video."""
        dataset = self._manifest_dataset(split, train=False)
        rows = dataset.rows
        captions = []
        for t in rows["text"]:
            try:
                text = read_text(inside(self.root / "text", t, what="text path"), what="text file").strip()
            except InputError:
                text = ""  # counted when the dataset reads it (a link out of the root is refused there)
            captions.append(text.split("#", 1)[0].strip() if self.title_only else text)
        n = len(rows)
        return RetrievalSplit(captions, list(rows["video"]), np.arange(n), np.arange(n)), dataset

    def videos(self, clips: list[str], *, train: bool = False) -> VideoDataset:
        """Gallery videos `<videos>/<clip><video_ext>` (with their soundtrack when `with_audio`)."""
        reader = self.reader if train else self.eval_reader
        return VideoDataset(clips, self.video_root, reader, ext=self.video_ext, with_audio=self.with_audio,
                            train=train, seed=self.seed)  # fmt: skip

    def texts(self, texts: list[str], ids) -> TextItems:
        text_ids, text_mask = encode_texts(self.tokenizer, list(texts), self.max_text_len)
        return TextItems(text_ids, text_mask, ids)

    def caption_items(self, split: RetrievalSplit) -> Dataset:
        """Training (caption, its video) pairs of a retrieval split: frames (+ audio), text, ids."""
        videos = self.videos(split.clips, train=True)
        text_ids, text_mask = encode_texts(self.tokenizer, split.captions, self.max_text_len)
        return _CaptionPairs(videos, split.text_to_video, text_ids, text_mask)

    def qa_items(self, records: list[dict], *, train: bool) -> QADataset:
        return QADataset(records, self.video_root, self.reader if train else self.eval_reader, self.tokenizer,
                         self.answers, max_text_len=self.max_text_len, ext=self.video_ext,
                         with_audio=self.with_audio, train=train, seed=self.seed)  # fmt: skip


class _CaptionPairs(Dataset):
    """(caption, video) training pairs over a `VideoDataset`: a broken video is replaced by the next
    readable one (its skip reported), the caption stays."""

    def __init__(self, videos: VideoDataset, text_to_video: np.ndarray, text_ids, text_mask):
        self.videos, self.text_to_video = videos, text_to_video
        self.text_ids, self.text_mask = text_ids, text_mask

    def set_epoch(self, epoch: int) -> None:
        self.videos.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.text_to_video)

    def __getitem__(self, i: int) -> dict:
        item = self.videos[int(self.text_to_video[i])]
        return {**item, "text_ids": self.text_ids[i], "text_mask": self.text_mask[i], "text_index": i}


def frames_of(batch: dict) -> tuple[torch.Tensor, int]:
    """Batch frames as (B·K, T, 3, S, S) clips and K (1 without test-time clips)."""
    frames = batch["frames"]
    if frames.dim() == 6:  # (B, K, T, 3, S, S)
        return frames.flatten(0, 1), frames.shape[1]
    return frames, 1
