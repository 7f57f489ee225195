"""Text + audio + video data from raw files (seed 004) and ALPRO-style retrieval / QA annotations.

Seed 004 (SPEC §1.5): `train.csv` / `validation.csv` with columns `video,audio,text`, relative paths
under `video_root`, `audio_root`, `text_root`; a text is a `.txt` file (the derivative's title is the
part before `#`: `title_only`). ALPRO: retrieval jsonl lines `{"caption", "clip_name"}` with videos at
`<video_root>/<clip_name>.mp4`; QA jsonl lines `{"question", "answer", "video_id", "answer_type"}`,
answers mapped through `train_ans2label.json` (the training split's vocabulary).

`ClipReader` turns files into model inputs (PyAV decoding, `vmmlib.io.media`; frames preprocessed in
torch, `video_transforms`; audio as a Kaldi fbank image or the seed's waveform image,
`audio_features`). Datasets yield dicts with the shared batch keys: `frames` (T, 3, S, S) or
(K, T, 3, S, S) with K test clips, `audio` (1, F, Ta), `text_ids`/`text_mask` (L,), `labels`, `id`.

Unreadable files never stop an epoch: the item's path and reason are logged and carried in the
batch (`skipped`, a list of (path, reason)), and `SkipLog.update(batch)` counts them. Training sets
(`on_error="next"`) replace a broken item by the next readable one; evaluation sets
(`on_error="zeros"`) keep the item with zero inputs so every id stays in the gallery.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from vmmlib.data.audio_features import AUDIO_MODES, AUDIOSET_MEAN, AUDIOSET_STD, audio_input
from vmmlib.data.tokenize import encode_texts
from vmmlib.data.video_transforms import IMAGENET_MEAN, IMAGENET_STD, preprocess_frames
from vmmlib.io import safe
from vmmlib.io.media import FRAME_STRATEGIES, MediaError, frame_indices, probe_media, read_audio, read_frames
from vmmlib.io.safe import InputError, inside, read_json, read_text, relative_path_problem

logger = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("video", "audio", "text")
AUDIO_SOURCES = ("file", "video")  # the manifest's audio file, or the video's own soundtrack
ON_ERROR = ("next", "zeros")
TEXT_KEYS = ("caption", "question")  # free text: strings only (ids and answers may be integers)
MAX_REPLACEMENTS = 16  # consecutive unreadable items tolerated before the data is declared broken


# ---- annotations -------------------------------------------------------------------------------


def read_manifest(path: str | Path, max_samples: int | None = None) -> pd.DataFrame:
    """A seed-004 CSV manifest → DataFrame with string columns video, audio, text (first `max_samples`).

    Raises:
        InputError: naming the file (and line) of a malformed CSV, missing columns, or a path that is
            absolute or climbs out of its root (`..`).
    """
    rows = list(safe.iter_csv_rows(path, what="manifest"))  # streamed, bounded lines, file and line in errors
    header = rows[0][1] if rows else []
    missing = [c for c in MANIFEST_COLUMNS if c not in header]
    if missing:
        raise InputError(
            path, f"missing column(s) {', '.join(missing)}; a manifest has columns video,audio,text"
        )
    columns, kept = [header.index(c) for c in MANIFEST_COLUMNS], []
    for line, fields in rows[1 : max_samples + 1 if max_samples else None]:
        if len(fields) != len(header):
            raise InputError(path, f"malformed manifest (expected {len(header)} fields)", f"line {line}")
        kept.append([fields[i] for i in columns])
        for name, value in zip(MANIFEST_COLUMNS, kept[-1]):
            problem = relative_path_problem(value) if value else None  # empty: unused (e.g. audio)
            if problem:
                raise InputError(path, f"{name} {value!r} {problem}", f"line {line}")
    return pd.DataFrame(kept, columns=list(MANIFEST_COLUMNS), dtype=str)


def read_jsonl(path: str | Path, required: Sequence[str] = ()) -> list[dict]:
    """One JSON object per non-empty line (`vmmlib.io.safe.iter_jsonl`: strict UTF-8, bounded depth);
    every error is an InputError naming the file and line."""
    records = []
    for lineno, record in safe.iter_jsonl(path, what="annotation file"):
        if not isinstance(record, dict):
            raise InputError(path, f"expected a JSON object, got {type(record).__name__}", f"line {lineno}")
        missing = [k for k in required if k not in record]
        if missing:
            raise InputError(path, f"missing key(s) {', '.join(missing)}", f"line {lineno}")
        bad = [
            k
            for k in required
            if not (isinstance(record[k], str) or (k not in TEXT_KEYS and _is_int(record[k])))
        ]
        if bad:
            raise InputError(path, f"key(s) {', '.join(bad)} must be strings", f"line {lineno}")
        records.append(record)
    if not records:
        raise InputError(path, "holds no records")
    return records


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_clip_names(path: str | Path, records: Sequence[dict], key: str) -> None:
    for lineno, r in enumerate(records, 1):
        problem = relative_path_problem(str(r[key]))
        if problem:
            raise InputError(path, f"{key} {r[key]!r} {problem}", f"record {lineno}")


def read_retrieval_annotations(
    path: str | Path, max_samples: int | None = None
) -> tuple[list[str], list[str], np.ndarray]:
    """ALPRO retrieval jsonl → captions, the distinct clip names (first-seen order), and (T,) int64
    caption → video index. `max_samples` keeps the first captions."""
    records = read_jsonl(path, ("caption", "clip_name"))[:max_samples]
    _check_clip_names(path, records, "clip_name")
    clips: dict[str, int] = {}
    text_to_video = [clips.setdefault(str(r["clip_name"]), len(clips)) for r in records]
    return [str(r["caption"]) for r in records], list(clips), np.asarray(text_to_video, np.int64)


def read_qa_annotations(path: str | Path, max_samples: int | None = None) -> list[dict]:
    """ALPRO QA jsonl → records with question, answer, video_id and answer_type ("" when absent)."""
    records = read_jsonl(path, ("question", "answer", "video_id"))[:max_samples]
    _check_clip_names(path, records, "video_id")
    return [{**r, "answer": str(r["answer"]), "answer_type": str(r.get("answer_type", ""))} for r in records]


class AnswerVocab:
    """Open-ended QA answers ↔ class labels, built from the training split only (ALPRO's
    `train_ans2label.json`); an answer outside it has label −100 (ignored by the loss, always wrong)."""

    def __init__(self, answers: Sequence[str]):
        self.answers = list(answers)
        self._label = {a: i for i, a in enumerate(self.answers)}
        if len(self._label) != len(self.answers):
            raise ValueError("duplicate answers in the answer vocabulary")

    @classmethod
    def from_answers(cls, train_answers: Sequence[str], top_k: int | None = None) -> AnswerVocab:
        """The `top_k` most frequent training answers (all by default), most frequent first, ties in
        first-seen order."""
        counts = Counter(train_answers)
        order = {a: i for i, a in reversed(list(enumerate(train_answers)))}
        ranked = sorted(counts, key=lambda a: (-counts[a], order[a]))
        return cls(ranked[:top_k])

    @classmethod
    def read(cls, path: str | Path) -> AnswerVocab:
        """`train_ans2label.json`: {answer: label}, labels 0..N-1 (InputError naming the file otherwise)."""
        mapping = read_json(path, what="answer vocabulary")
        if not isinstance(mapping, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in mapping.values()
        ):
            raise InputError(path, "expected a JSON object {answer: integer label}")
        answers = sorted(mapping, key=mapping.get)
        if [mapping[a] for a in answers] != list(range(len(answers))):
            raise InputError(path, f"labels must be 0..{len(answers) - 1}")
        return cls(answers)

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self._label, ensure_ascii=False, indent=1), encoding="utf-8")

    def __len__(self) -> int:
        return len(self.answers)

    def label(self, answer: str) -> int:
        return self._label.get(answer, -100)

    def answer(self, label: int) -> str:
        return self.answers[int(label)]


# ---- tokenizer ---------------------------------------------------------------------------------


def build_deberta_tokenizer(texts: Sequence[str], out_dir: str | Path | None = None, *, min_count: int = 1):
    """A DeBERTa-v2 (SentencePiece-Unigram) tokenizer whose vocabulary comes from `texts`.

    For data without a pretrained tokenizer folder (the sample data): pieces are [PAD], [CLS], [SEP],
    [UNK], [MASK] (ids 0–4, deberta-v2's order for the first four), then "▁word" for every lower-cased
    word seen at least `min_count` times (log-frequency scores), then every character alone and as
    "▁c" at a low score, so any unseen word splits into characters. Saved to `out_dir` when given
    (loadable with `load_text_tokenizer`).
    """
    from transformers import DebertaV2Tokenizer

    counts = Counter(w for t in texts for w in str(t).lower().split())
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    total = sum(counts.values()) or 1
    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    vocab = [(s, 0.0) for s in specials] + [("▁", -2.0)]
    vocab += [("▁" + w, math.log(counts[w] / total)) for w in words]
    chars = sorted({c for w in counts for c in w})
    seen = {p for p, _ in vocab}
    vocab += [(p, -20.0) for c in chars for p in ("▁" + c, c) if p not in seen]
    tokenizer = DebertaV2Tokenizer(vocab=vocab, do_lower_case=True, unk_id=3)
    if out_dir is not None:
        tokenizer.save_pretrained(str(out_dir))
    return tokenizer


def load_text_tokenizer(folder: str | Path):
    """The tokenizer saved in a local Hugging Face folder (DeBERTa-v2 or any other)."""
    from transformers import AutoTokenizer

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"tokenizer folder {folder} does not exist")
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def special_token_ids(tokenizer) -> list[int]:
    """Ids never masked by MLM: the tokenizer's special tokens."""
    return sorted(set(tokenizer.all_special_ids))


# ---- media → inputs ----------------------------------------------------------------------------


class ClipReader:
    """Decode and preprocess one video clip and one audio track.

    Args:
        num_frames: frames per clip (T).
        image_size: frame side after cropping (S); `resize`: shorter side before cropping (default S;
            ALPRO 256 → 224).
        frame_strategy: `rate` (seed 004, `frame_sample_rate` apart), `uniform` or `random`
            (`vmmlib.io.media.frame_indices`); training draws at random (`rate`: the window start).
        num_clips: clips per video at test time (frames (K, T, 3, S, S)); 1: a single centred clip.
        mean, std: frame normalisation (ImageNet, VideoMAE's default; CLIP's for ALPRO).
        audio_mode: `fbank` (1, audio_freq, audio_time) or `waveform` (1, audio_image_size²).
        sample_rate: audio decoding rate (Hz).
    """

    def __init__(
        self,
        *,
        num_frames: int = 16,
        image_size: int = 224,
        resize: int | None = None,
        frame_strategy: str = "rate",
        frame_sample_rate: int = 4,
        num_clips: int = 1,
        mean: tuple = IMAGENET_MEAN,
        std: tuple = IMAGENET_STD,
        audio_mode: str = "fbank",
        sample_rate: int = 16000,
        audio_freq: int = 128,
        audio_time: int = 1024,
        audio_image_size: int = 224,
        audio_mean: float | None = AUDIOSET_MEAN,
        audio_std: float | None = AUDIOSET_STD,
    ):
        if frame_strategy not in FRAME_STRATEGIES:
            raise ValueError(
                f"unknown frame_strategy {frame_strategy!r}; valid choices: {', '.join(FRAME_STRATEGIES)}"
            )
        if audio_mode not in AUDIO_MODES:
            raise ValueError(f"unknown audio_mode {audio_mode!r}; valid choices: {', '.join(AUDIO_MODES)}")
        self.num_frames, self.image_size, self.resize = num_frames, image_size, resize
        self.frame_strategy, self.frame_sample_rate, self.num_clips = (
            frame_strategy,
            frame_sample_rate,
            num_clips,
        )
        self.mean, self.std = mean, std
        self.audio_mode, self.sample_rate = audio_mode, sample_rate
        self.audio_freq, self.audio_time, self.audio_image_size = audio_freq, audio_time, audio_image_size
        self.audio_mean, self.audio_std = audio_mean, audio_std

    def video_shape(self) -> tuple[int, ...]:
        clip = (self.num_frames, 3, self.image_size, self.image_size)
        return clip if self.num_clips == 1 else (self.num_clips, *clip)

    def audio_shape(self) -> tuple[int, ...]:
        if self.audio_mode == "fbank":
            return (1, self.audio_freq, self.audio_time)
        return (1, self.audio_image_size, self.audio_image_size)

    def video(self, path: str | Path, rng: np.random.Generator | None = None) -> torch.Tensor:
        """Training (`rng` given): one randomly placed clip, random crop. Evaluation: `num_clips`
        evenly placed clips, centre crop. Returns float32 `video_shape()`."""
        info = probe_media(path)
        if info.num_frames < 1:
            raise MediaError(path, "no video frames")
        train = rng is not None
        clips = [None] if train else range(self.num_clips)
        index = [
            frame_indices(
                info.num_frames,
                self.num_frames,
                strategy=self.frame_strategy,
                frame_sample_rate=self.frame_sample_rate,
                num_clips=1 if train else self.num_clips,
                clip_index=k,
                rng=rng,
            )
            for k in clips
        ]
        short = self.resize or self.image_size
        frames = read_frames(path, np.concatenate(index), short_side=short)  # (K*T, H, W, 3)
        generator = torch.Generator().manual_seed(int(rng.integers(2**31))) if train else None
        out = [
            preprocess_frames(
                frames[k * self.num_frames : (k + 1) * self.num_frames],
                self.image_size,
                resize=self.resize,
                mean=self.mean,
                std=self.std,
                random_crop=train,
                generator=generator,
            )
            for k in range(len(index))
        ]
        return out[0] if len(out) == 1 else torch.stack(out)

    def audio(self, path: str | Path) -> torch.Tensor:
        """The first audio stream of `path` (a wav, or a video's soundtrack) → float32 `audio_shape()`."""
        waveform = read_audio(path, self.sample_rate)
        return audio_input(
            waveform,
            self.sample_rate,
            mode=self.audio_mode,
            freq=self.audio_freq,
            time=self.audio_time,
            image_size=self.audio_image_size,
            mean=self.audio_mean,
            std=self.audio_std,
        )


class SkipLog:
    """Counts the unreadable files reported in batches (`batch["skipped"]`: (path, reason) pairs)."""

    def __init__(self):
        self.count = 0
        self.reasons: Counter = Counter()
        self.paths: list[str] = []

    def update(self, batch: dict) -> int:
        """Add a batch's skipped files; returns how many it had."""
        skipped = batch.get("skipped", [])
        for path, reason in skipped:
            self.count += 1
            self.reasons[reason] += 1
            self.paths.append(path)
        return len(skipped)

    def summary(self) -> dict:
        return {"skipped": self.count, "reasons": dict(self.reasons), "paths": list(self.paths)}


# ---- datasets ----------------------------------------------------------------------------------


def _read_text(path: Path, title_only: bool) -> str:
    """A text file (strict UTF-8, bounded size); an unreadable one is a MediaError (the item is skipped)."""
    try:
        text = read_text(path, what="text file").strip()
    except InputError as err:
        raise MediaError(
            path, f"cannot read text ({err.where + ': ' if err.where else ''}{err.reason})"
        ) from err
    return text.split("#", 1)[0].strip() if title_only else text


class _RobustDataset(Dataset):
    """Items that may fail to load: `on_error="next"` tries the following items (training),
    `"zeros"` returns the item with zero inputs (evaluation). Failures are logged and reported in the
    item's `skipped` list. Training randomness derives from (seed, epoch, index): exact resume."""

    def __init__(self, size: int, train: bool, on_error: str | None, seed: int):
        on_error = on_error or ("next" if train else "zeros")
        if on_error not in ON_ERROR:
            raise ValueError(f"unknown on_error {on_error!r}; valid choices: {', '.join(ON_ERROR)}")
        self.size, self.train, self.on_error, self.seed, self.epoch = size, train, on_error, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size

    def _load(self, i: int, rng: np.random.Generator | None) -> dict:
        raise NotImplementedError

    def _zeros(self, i: int) -> dict:
        raise NotImplementedError

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.size:
            raise IndexError(f"index {i} out of range for {self.size} items")
        skipped = []
        tries = min(MAX_REPLACEMENTS, self.size) if self.on_error == "next" else 1
        for attempt in range(tries):
            j = (i + attempt) % self.size
            rng = np.random.default_rng([self.seed, self.epoch, j]) if self.train else None
            try:
                return {**self._load(j, rng), "skipped": skipped}
            except MediaError as err:
                logger.warning("skipping unreadable %s: %s", err.path, err.reason)
                skipped.append((err.path, err.reason))
        if self.on_error == "zeros":
            return {**self._zeros(i), "skipped": skipped}
        raise RuntimeError(
            f"{tries} consecutive items from index {i} are unreadable (last: {skipped[-1][0]}: {skipped[-1][1]}); "
            "check the data roots"
        )


class AVFusionDataset(_RobustDataset):
    """Seed-004 manifest rows → `frames`, `audio`, `text_ids`, `text_mask`, `id` (the video path).

    Args:
        manifest: `read_manifest` rows.
        video_root, audio_root, text_root: folders the manifest's relative paths live under.
        reader: decoding and preprocessing settings.
        tokenizer: a Hugging Face tokenizer (`build_deberta_tokenizer`, `load_text_tokenizer`).
        max_text_len: tokens per text, [CLS] … [SEP] padded.
        train: random clip placement and crop per (epoch, index); False: test clips, centre crop.
        title_only: keep the text before the first `#` (the derivative's title).
        audio_source: `file` (the manifest's audio column) or `video` (the video's soundtrack).
        with_audio: False leaves `audio` out of the items (text + video models; no audio decoding).
        on_error: `next` (default when training) or `zeros` (default otherwise); module docstring.
        max_samples: keep only the first rows (the seed's max_train_samples / max_eval_samples).
    """

    def __init__(
        self,
        manifest: pd.DataFrame,
        video_root: str | Path,
        audio_root: str | Path,
        text_root: str | Path,
        reader: ClipReader,
        tokenizer,
        *,
        max_text_len: int = 64,
        train: bool = True,
        title_only: bool = False,
        audio_source: str = "file",
        with_audio: bool = True,
        on_error: str | None = None,
        max_samples: int | None = None,
        seed: int = 0,
    ):
        if audio_source not in AUDIO_SOURCES:
            raise ValueError(
                f"unknown audio_source {audio_source!r}; valid choices: {', '.join(AUDIO_SOURCES)}"
            )
        self.rows = manifest.iloc[:max_samples].reset_index(drop=True) if max_samples else manifest
        super().__init__(len(self.rows), train, on_error, seed)
        self.roots = Path(video_root), Path(audio_root), Path(text_root)
        self.reader, self.tokenizer, self.max_text_len = reader, tokenizer, max_text_len
        self.title_only, self.audio_source, self.with_audio = title_only, audio_source, with_audio

    def _text(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        ids, mask = encode_texts(self.tokenizer, [text], self.max_text_len)
        return ids[0], mask[0]

    def _load(self, i: int, rng) -> dict:
        row = self.rows.iloc[i]
        video = inside(self.roots[0], row["video"], what="video path")  # links out of a root are refused
        audio = (
            video if self.audio_source == "video" else inside(self.roots[1], row["audio"], what="audio path")
        )
        text = inside(self.roots[2], row["text"], what="text path")
        text_ids, text_mask = self._text(_read_text(text, self.title_only))
        item = {"frames": self.reader.video(video, rng), "text_ids": text_ids, "text_mask": text_mask}
        if self.with_audio:
            item["audio"] = self.reader.audio(audio)
        return {**item, "id": row["video"]}

    def _zeros(self, i: int) -> dict:
        text_ids, text_mask = self._text("")
        item = {
            "frames": torch.zeros(self.reader.video_shape()),
            "text_ids": text_ids,
            "text_mask": text_mask,
        }
        if self.with_audio:
            item["audio"] = torch.zeros(self.reader.audio_shape())
        return {**item, "id": self.rows.iloc[i]["video"]}


class VideoDataset(_RobustDataset):
    """The videos of a retrieval gallery or a QA split (ALPRO layout: `<video_root>/<clip><ext>`)
    → `frames` (and `audio` from the soundtrack with `with_audio`), `video_index`, `id`."""

    def __init__(
        self,
        clip_names: Sequence[str],
        video_root: str | Path,
        reader: ClipReader,
        *,
        ext: str = ".mp4",
        with_audio: bool = False,
        train: bool = False,
        on_error: str | None = None,
        seed: int = 0,
    ):
        super().__init__(len(clip_names), train, on_error, seed)
        self.clip_names, self.root, self.ext = list(clip_names), Path(video_root), ext
        self.reader, self.with_audio = reader, with_audio

    def path(self, i: int) -> Path:
        """The clip's file, which must lie inside `video_root` (InputError otherwise)."""
        return inside(self.root, f"{self.clip_names[i]}{self.ext}", what="clip")

    def _load(self, i: int, rng) -> dict:
        item = {"frames": self.reader.video(self.path(i), rng), "video_index": i, "id": self.clip_names[i]}
        if self.with_audio:
            item["audio"] = self.reader.audio(self.path(i))
        return item

    def _zeros(self, i: int) -> dict:
        item = {"frames": torch.zeros(self.reader.video_shape()), "video_index": i, "id": self.clip_names[i]}
        if self.with_audio:
            item["audio"] = torch.zeros(self.reader.audio_shape())
        return item


class CaptionVideoDataset(VideoDataset):
    """ALPRO retrieval training pairs: one item per caption → its video's `frames`, the caption's
    `text_ids`/`text_mask`, `video_index`, `text_index`, `id` (clip name)."""

    def __init__(self, annotation: str | Path, video_root: str | Path, reader: ClipReader, tokenizer, *,
                 max_text_len: int = 40, max_samples: int | None = None, **kwargs):  # fmt: skip
        captions, clips, self.text_to_video = read_retrieval_annotations(annotation, max_samples)
        super().__init__(clips, video_root, reader, **{"train": True, **kwargs})
        self.size = len(captions)
        self.text_ids, self.text_mask = encode_texts(tokenizer, captions, max_text_len)

    def _load(self, i: int, rng) -> dict:
        item = super()._load(int(self.text_to_video[i]), rng)
        return {**item, "text_ids": self.text_ids[i], "text_mask": self.text_mask[i], "text_index": i}

    def _zeros(self, i: int) -> dict:
        item = super()._zeros(int(self.text_to_video[i]))
        return {**item, "text_ids": self.text_ids[i], "text_mask": self.text_mask[i], "text_index": i}


class QADataset(VideoDataset):
    """ALPRO open-ended video QA: one item per question → `frames`, question `text_ids`/`text_mask`,
    `labels` (answer label, −100 outside the training vocabulary), `answer_type`, `question_id` (the
    line number, as ALPRO's running counter), `id` (video id)."""

    def __init__(self, records: Sequence[dict], video_root: str | Path, reader: ClipReader, tokenizer,
                 answers: AnswerVocab, *, max_text_len: int = 40, **kwargs):  # fmt: skip
        self.records = list(records)
        videos = list(dict.fromkeys(str(r["video_id"]) for r in self.records))
        super().__init__(videos, video_root, reader, **kwargs)
        self.size = len(self.records)
        self._video = {v: i for i, v in enumerate(videos)}
        self.text_ids, self.text_mask = encode_texts(
            tokenizer, [r["question"] for r in self.records], max_text_len
        )
        self.labels = np.array([answers.label(r["answer"]) for r in self.records], dtype=np.int64)

    def _extra(self, i: int) -> dict:
        r = self.records[i]
        return {
            "text_ids": self.text_ids[i],
            "text_mask": self.text_mask[i],
            "labels": self.labels[i],
            "answer_type": r["answer_type"],
            "question_id": i,
        }

    def _load(self, i: int, rng) -> dict:
        return {**super()._load(self._video[str(self.records[i]["video_id"])], rng), **self._extra(i)}

    def _zeros(self, i: int) -> dict:
        return {**super()._zeros(self._video[str(self.records[i]["video_id"])]), **self._extra(i)}


def collate_avfusion(items: Sequence[dict]) -> dict:
    """Stack a list of items into a batch: tensors and arrays stacked, numbers to tensors, strings to
    lists; `skipped` becomes the concatenated list of (path, reason) of the batch."""
    if not items:
        raise ValueError("collate_avfusion got an empty list")
    batch: dict = {"skipped": [s for item in items for s in item.get("skipped", [])]}
    for key in items[0]:
        if key == "skipped":
            continue
        values = [item[key] for item in items]
        first = values[0]
        if isinstance(first, torch.Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(first, np.ndarray):
            batch[key] = torch.from_numpy(np.stack(values))
        elif isinstance(first, (int, np.integer, float, np.floating)) and not isinstance(first, bool):
            batch[key] = torch.as_tensor(np.asarray(values))
        else:
            batch[key] = list(values)
    return batch
