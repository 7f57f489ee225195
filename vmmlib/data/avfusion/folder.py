"""An opened avfusion data folder (`load`): annotations, tokenizer, clip readers
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
    build_deberta_tokenizer,
    load_text_tokenizer,
    read_manifest,
    read_qa_annotations,
    read_retrieval_annotations,
)
from vmmlib.data.image_transforms import CLIP_MEAN, CLIP_STD
from vmmlib.data.tokenize import encode_texts
from vmmlib.data.video_transforms import IMAGENET_MEAN, IMAGENET_STD
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
    """An avfusion data folder opened with its reader options (see `load`)."""

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

    def model_overrides(self, text_model_dir: str = "") -> dict:
        """What a model must match in this data: frames, frame size, spectrogram (or waveform image)
        size, answer classes (QA), text length, and the vocabulary (a `text_model_dir` brings its own)."""
        r = self.reader
        audio = (r.audio_freq, r.audio_time) if r.audio_mode == "fbank" else (r.audio_image_size,) * 2
        sized = dict(num_frames=r.num_frames, image_size=r.image_size, audio_freq=audio[0], audio_time=audio[1],
                     num_classes=self.num_classes(), max_text_len=max(64, self.max_text_len))  # fmt: skip
        return sized if text_model_dir else {**sized, "vocab_size": len(self.tokenizer)}

    # --- folds ---------------------------------------------------------------------------------------

    def held_out(self, val_idx: np.ndarray):
        """A fold's held-out retrieval split (gallery = its videos) or QA records (`fold_indices`)."""
        if self.downstream == "retrieval":
            source = self.retrieval(self.holdout_split)
            return source.subset(val_idx) if self.holdout_split == "train" else source
        if self.holdout_split == "val":
            return self.qa("val")
        held = {self.fold_videos()[i] for i in val_idx}
        return [r for r in self.qa("train") if str(r["video_id"]) in held]

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


NORMALIZATIONS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "clip": (CLIP_MEAN, CLIP_STD)}


def _folder(data_dir: str | Path) -> Path:
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"data folder {root} does not exist (`vmm sample avfusion {root}` writes one)"
        )
    return root


def load(
    data_dir: str | Path,
    *,
    text_model_dir: str = "",
    downstream: str = "retrieval",
    num_frames: int = 16,
    image_size: int = 224,
    resize: int = 0,
    frame_strategy: str = "rate",
    frame_sample_rate: int = 4,
    test_clips: int = 1,
    normalize: str = "imagenet",
    audio_mode: str = "fbank",
    audio_freq: int = 128,
    audio_time: int = 1024,
    audio_image_size: int = 224,
    with_audio: bool = True,
    audio_source: str = "file",
    title_only: bool = False,
    max_text_len: int = 40,
    max_train_samples: int = 0,
    max_eval_samples: int = 0,
    video_ext: str = ".mp4",
    seed: int = 0,
) -> AVFusionData:
    """Open an avfusion folder (layout: the module docstring); the notebooks' `data_options` are these
    keyword arguments.

    Args:
        text_model_dir: a local Hugging Face folder whose tokenizer is used; "" uses `data_dir/tokenizer`
            (the sample's), else one built from the folder's texts.
        downstream: `retrieval` or `qa` (`vmmlib.tasks.avfusion`).
        num_frames, image_size, resize, frame_strategy, frame_sample_rate: clip sampling (seed 004:
            16 frames `rate` 4 at 224; ALPRO: 8 frames (16 for QA) `uniform`, resize 256 → 224).
        test_clips: clips per video at test time (similarities averaged over them, ALPRO's mean).
        normalize: frame mean/std, `imagenet` (VideoMAE) or `clip` (ALPRO).
        audio_mode, audio_freq, audio_time, audio_image_size: fbank (1, freq, time) or waveform image.
        with_audio: decode audio for downstream videos (from their soundtrack); models with an audio
            tower need it. audio_source: pretraining audio from the manifest's `file` or the `video`.
        title_only: keep a text file's part before `#` (the seed derivative's title).
        max_text_len: tokens per caption / question / text.
        max_train_samples, max_eval_samples: keep the first N training / evaluation annotations (0: all).
    """
    check_choice("downstream", downstream, DOWNSTREAMS)
    check_choice("normalize", normalize, NORMALIZATIONS)
    root = _folder(data_dir)
    mean, std = NORMALIZATIONS[normalize]
    common = dict(num_frames=num_frames, image_size=image_size, resize=resize or None, frame_strategy=frame_strategy,
                  frame_sample_rate=frame_sample_rate, mean=mean, std=std, audio_mode=audio_mode,
                  audio_freq=audio_freq, audio_time=audio_time, audio_image_size=audio_image_size)  # fmt: skip
    return AVFusionData(
        root, tokenizer=_tokenizer(root, text_model_dir), reader=ClipReader(**common),
        eval_reader=ClipReader(**common, num_clips=test_clips), downstream=downstream,
        max_text_len=max_text_len, max_train_samples=max_train_samples, max_eval_samples=max_eval_samples,
        with_audio=with_audio, title_only=title_only, audio_source=audio_source, video_ext=video_ext, seed=seed,
    )  # fmt: skip


def _tokenizer(root: Path, text_model_dir: str):
    if text_model_dir:
        return load_text_tokenizer(text_model_dir)
    if (root / "tokenizer").is_dir():
        return load_text_tokenizer(root / "tokenizer")
    texts = [(root / "text" / t).read_text(encoding="utf-8") for t in sorted(
        p.name for p in (root / "text").glob("*.txt"))] if (root / "text").is_dir() else []  # fmt: skip
    for path in sorted((root / "retrieval").glob("*.jsonl")) + sorted((root / "qa").glob("*.jsonl")):
        texts += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise FileNotFoundError(
            f"{root} has no tokenizer/ folder and no texts to build one; set text_model_dir to a local Hugging "
            "Face folder holding a tokenizer (e.g. a copy of microsoft/deberta-v2-xlarge)"
        )
    return build_deberta_tokenizer(texts)


def open_annotations(data_dir: str | Path) -> AVFusionData:
    """A folder opened for its annotations alone (no tokenizer, default readers): what explore reads."""
    return AVFusionData(_folder(data_dir), tokenizer=None, reader=ClipReader(), eval_reader=ClipReader(),
                        downstream="retrieval", max_text_len=0, max_train_samples=0, max_eval_samples=0,
                        with_audio=False, title_only=False, audio_source="file", video_ext=".mp4", seed=0)  # fmt: skip


def annotated_splits(data: AVFusionData):
    """(split name, video files, texts, extra counts) of every annotation file present."""
    for split, name in MANIFESTS.items():
        if (data.root / name).is_file():
            rows = data.manifest(split)
            texts = data.manifest_retrieval(split)[0].captions
            missing = sum(not (data.root / "audio" / a).is_file() for a in rows["audio"])
            yield f"manifest/{split}", list(rows["video"]), texts, {"missing_audio_files": missing}
    for split in SPLITS:
        if (data.root / "retrieval" / f"{split}.jsonl").is_file():
            r = data.retrieval(split)
            yield f"retrieval/{split}", [c + data.video_ext for c in r.clips], r.captions, {}
        if (data.root / "qa" / f"{split}.jsonl").is_file():
            q = data.qa(split)
            videos = list(dict.fromkeys(str(x["video_id"]) + data.video_ext for x in q))
            yield (
                f"qa/{split}",
                videos,
                [x["question"] for x in q],
                {"answers": len({x["answer"] for x in q})},
            )
