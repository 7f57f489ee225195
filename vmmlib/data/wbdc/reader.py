"""WeChat Big Data Challenge 2022 short-video data, in its exact on-disk layout (SPEC §1.2, §9.1).

    data_dir/
      annotations/{labeled,unlabeled,test_a}.json   JSON array: id, category_id 'LLSS' (labeled only),
                                                    title, asr, ocr [{"time", "text"}, ...]
      zip_feats/{labeled,unlabeled,test_a}.zip      member "{id}.npy": float16 [num_frames, 768]
      zip_frames/{split}/{id[-3:]}/{id}.zip         semi-final raw frames: JPEG members, name order =
                                                    time order (optional)
      vocab.txt                                     BERT WordPiece vocabulary (the sample writes one;
                                                    with real data pass e.g. chinese-macbert-base's)

Feature and frame zips are read lazily, never extracted: each process (DataLoader worker) opens its
own handle on first use, and a handle inherited through fork is reopened (checked by pid). A video
whose features are missing, unreadable or all non-finite falls back to text only; the problem is
reported by id (`warnings`, the `frame_error` item key, `WBDCDataset.missing_ids`) and an epoch
never crashes on it. The zip readers and the JPEG decoding live in `vmmlib.data.wbdc.zips`.

Text: `[CLS] title [SEP] ocr [SEP] asr [SEP]`, cut to `max_text_len` by removing tokens from the end
of the currently longest piece (rank 8, SPEC §3.8), or `[CLS] title [SEP]` (the baseline). Frames:
`frame_sampling="uniform"` (a true linspace spread, the default), `"official"` (the baseline's
`range(0, n, n // T)[:T]`, i.e. the first T frames when T < n < 2T), and in training a random
sorted subset of T frames (`train=True`, the baseline's train mode).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold
from torch.utils.data import Dataset

from vmmlib.io.wbdc_categories import category_to_lv2
from vmmlib.data.wbdc.zips import (  # noqa: F401  (the readers are part of this module's interface)
    FEATURE_DIM,
    IMAGE_STATS,
    FeatureZip,
    FrameReadError,
    FrameTransform,
    RawFrameZips,
    decode_jpeg,
)
from vmmlib.io.safe import InputError, check_name, read_json, read_text

MAX_FRAMES = 32
SPLITS = ("labeled", "unlabeled", "test_a", "test_b", "test")
FRAME_SAMPLINGS = ("uniform", "official")
TEXT_FIELDS = ("title+ocr+asr", "title")
NONFINITE = ("zero", "drop")
FOLD_SEED = 802  # rank 8's StratifiedKFold(random_state=802) on lv2 (SPEC §1.2)
CHAR_CAP = 10  # a piece is cut to CHAR_CAP × max_text_len characters before tokenising (speed)


# ------------------------------------------------------------------ layout and annotations


def annotation_path(data_dir: str | Path, split: str) -> Path:
    return Path(data_dir) / "annotations" / f"{split}.json"


def read_annotations(path: str | Path) -> list[dict]:
    """An annotation JSON array → list of entries (id, title, asr, ocr, and category_id if labelled).

    Read through `vmmlib.io.safe` (size, encoding, depth). Raises InputError naming the file and the
    entry (and its line, where it can be found) for an entry that is not an object, an id that is
    missing, not a plain name or repeated, a text field that is not a string or an unknown category.
    """
    entries = read_json(path, what="annotation file")
    if not isinstance(entries, list):
        raise InputError(path, f"expected a JSON array of annotation objects, got {type(entries).__name__}")
    seen: dict[str, int] = {}
    for n, e in enumerate(entries):
        problem = _entry_problem(e, seen)
        if problem:
            raise InputError(path, problem, _entry_place(path, n))
        seen[str(e["id"])] = n
    return entries


def _entry_problem(e: object, seen: dict[str, int]) -> str | None:
    """What is wrong with one annotation entry (None if nothing)."""
    if not isinstance(e, dict):
        return f"entry is a {type(e).__name__}, not an object"
    vid = e.get("id")
    if isinstance(vid, bool) or not isinstance(vid, (str, int)):
        return f"'id' missing or not a string ({vid!r})"
    try:
        check_name(str(vid), "id")
    except InputError as err:
        return err.reason
    if str(vid) in seen:
        return f"id {vid} repeated (first at entry {seen[str(vid)]})"
    for key in ("title", "asr"):
        if not isinstance(e.get(key) or "", str):
            return f"{key!r} is a {type(e[key]).__name__}, not a string"
    if not isinstance(e.get("ocr") or [], (str, list)):
        return f"'ocr' is a {type(e['ocr']).__name__}, not a list"
    category = e.get("category_id")
    if category not in (None, ""):
        try:
            category_to_lv2(str(category))
        except (KeyError, ValueError) as err:
            return f"category_id {category!r}: {err}"
    return None


def _entry_place(path: str | Path, n: int) -> str:
    """ "entry n (line k)": the line of the n-th `"id":` key when every entry has one, else "entry n"."""
    text = read_text(path, what="annotation file")
    starts = [m.start() for m in re.finditer(r'"id"\s*:', text)]
    if n < len(starts):
        return f"entry {n} (line {text.count(chr(10), 0, starts[n]) + 1})"
    return f"entry {n}"


def check_layout(data_dir: str | Path) -> dict[str, dict[str, Path | None]]:
    """The splits present under `data_dir`: {split: {"annotations", "features", "frames"}} (None if absent).

    Raises:
        InputError: naming what is missing and the layout expected.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise InputError(root, f"data_dir does not exist (make a sample with `vmm sample wbdc {root}`)")
    found = {}
    for split in SPLITS:
        ann = annotation_path(root, split)
        if ann.exists() or ann.is_symlink():
            feats, frames = root / "zip_feats" / f"{split}.zip", root / "zip_frames" / split
            found[split] = {
                "annotations": ann,
                "features": feats if feats.exists() or feats.is_symlink() else None,
                "frames": frames if frames.exists() or frames.is_symlink() else None,
            }
    if "labeled" not in found:
        raise InputError(
            annotation_path(root, "labeled"),
            "not found: not the WBDC layout (data_dir is the competition folder)",
        )
    if not any(v["features"] or v["frames"] for v in found.values()):
        raise InputError(root, "neither zip_feats/{split}.zip nor zip_frames/{split}/ found")
    return found


def default_vocab(data_dir: str | Path) -> Path:
    return Path(data_dir) / "vocab.txt"


def ocr_text(entry: dict) -> str:
    """All OCR texts of a video joined in list order (rank 8 concatenates the `text` fields)."""
    ocr = entry.get("ocr") or []
    if isinstance(ocr, str):
        return ocr
    return "".join(str(o.get("text", "")) for o in ocr if isinstance(o, dict))


def label_of(entry: dict) -> int:
    """lv2 id of a labelled entry, −1 when it has no category_id (unlabeled, test)."""
    category = entry.get("category_id")
    return -1 if category in (None, "") else category_to_lv2(str(category))


# ------------------------------------------------------------------ folds


def stratified_folds(
    labels: Sequence[int], n_folds: int = 5, fold: int = 0, *, seed: int = FOLD_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """Rank 8's folds: `StratifiedKFold(n_folds, shuffle=True, random_state=802)` on lv2 labels.

    Args:
        labels: (N,) lv2 ids of the labelled videos, in annotation order.
        fold: which split of `StratifiedKFold.split` to hold out (0-based; the seed validated on its
            fold 1).

    Returns:
        (train_idx, val_idx) int64 indices into `labels`.
    """
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold must be in 0..{n_folds - 1}, got {fold}")
    labels = np.asarray(labels)
    with warnings.catch_warnings():  # classes rarer than n_folds: sklearn warns, the split is still valid
        warnings.simplefilter("ignore", UserWarning)
        splits = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(
            np.zeros(len(labels)), labels
        )
        train, val = list(splits)[fold]
    return train.astype(np.int64), val.astype(np.int64)


def fold_assignment(labels: Sequence[int], n_folds: int = 5, *, seed: int = FOLD_SEED) -> np.ndarray:
    """(N,) int64: the fold in which each video is held out by `stratified_folds`."""
    out = np.full(len(labels), -1, dtype=np.int64)
    for k in range(n_folds):
        out[stratified_folds(labels, n_folds, k, seed=seed)[1]] = k
    return out


# ------------------------------------------------------------------ frame sampling


def frame_indices(num_frames: int, max_frames: int = MAX_FRAMES, mode: str = "uniform") -> np.ndarray:
    """Which of a video's frames to keep, in time order (deterministic modes; see `random_frame_indices`).

    Args:
        num_frames: n, frames the video has.
        max_frames: T.
        mode: "uniform": all frames if n ≤ T, else `round(linspace(0, n-1, T))`, a true spread;
            "official": the baseline's test mode, all if n ≤ T, else `range(0, n, n // T)[:T]`, which
            is the first T frames whenever T < n < 2T (SPEC §9.1).

    Returns:
        (k,) int64 indices, k = min(n, T).
    """
    if mode not in FRAME_SAMPLINGS:
        raise ValueError(f"unknown frame_sampling {mode!r}; valid choices: {', '.join(FRAME_SAMPLINGS)}")
    if num_frames <= max_frames:
        return np.arange(num_frames, dtype=np.int64)
    if mode == "official":
        return np.arange(0, num_frames, num_frames // max_frames, dtype=np.int64)[:max_frames]
    return np.round(np.linspace(0, num_frames - 1, max_frames)).astype(np.int64)


def random_frame_indices(num_frames: int, max_frames: int = MAX_FRAMES, generator=None) -> np.ndarray:
    """Training draw: a random subset of min(n, T) frames, sorted (the baseline's train mode).

    Uses torch's RNG (seeded per DataLoader worker), so workers draw different subsets.
    """
    if num_frames <= max_frames:
        return np.arange(num_frames, dtype=np.int64)
    return torch.randperm(num_frames, generator=generator)[:max_frames].sort().values.numpy()


# ------------------------------------------------------------------ text


def truncate_longest(pieces: list[list], budget: int) -> list[list]:
    """Drop tokens from the end of the currently longest piece until the total fits `budget`
    (ties: the later piece loses first, so the title is cut last)."""
    pieces = [list(p[:budget]) for p in pieces]
    total = sum(map(len, pieces))
    while total > budget:
        longest = max(range(len(pieces)), key=lambda i: (len(pieces[i]), i))
        pieces[longest].pop()
        total -= 1
    return pieces


def encode_pieces(tokenizer, texts: Sequence[str], max_len: int) -> np.ndarray:
    """`[CLS] t1 [SEP] t2 [SEP] ... [SEP]` token ids, cut by `truncate_longest` to ≤ max_len tokens.

    Returns:
        (L,) int64 ids, L ≤ max_len (no padding: `collate` pads per batch).
    """
    budget = max_len - 1 - len(texts)
    if budget < 0:
        raise ValueError(f"max_len {max_len} leaves no room for {len(texts)} pieces")
    pieces = [tokenizer.tokenize(t[: CHAR_CAP * max_len]) if t else [] for t in texts]
    pieces = truncate_longest(pieces, budget)
    ids = [tokenizer.cls_token_id]
    for p in pieces:
        ids += tokenizer.convert_tokens_to_ids(p) + [tokenizer.sep_token_id]
    return np.asarray(ids, dtype=np.int64)


# ------------------------------------------------------------------ dataset


class WBDCDataset(Dataset):
    """Map-style dataset of one split's videos → the shared batch keys (use `collate`).

    Items: `frames` float32 (T, 768) features, or (T, 3, S, S) pixels when `raw_frames` is given;
    `frame_mask` (T,) float32; `text_ids` (L,) int64 (unpadded, L ≤ max_text_len); `labels` int64
    lv2 id (−1 when unlabelled); `id` str; `frame_error` str ("" when the frames were read). With
    `ict_texts`, also `title_ids` (`[CLS] title [SEP]`) and `context_ids` (`[CLS] ocr [SEP] asr [SEP]`),
    the two views of the inverse cloze task.

    Args:
        entries: annotation entries (`read_annotations`), e.g. one fold's subset.
        tokenizer: a BERT WordPiece tokenizer (`vmmlib.data.tokenize.load_tokenizer`).
        features: the split's `FeatureZip` (pre-extracted features), or None.
        raw_frames: the split's `RawFrameZips` (decoded and transformed here), or None.
        transform: the `FrameTransform` for raw frames (default: CLIP 224).
        max_frames: T.
        frame_sampling: "uniform" or "official" (`frame_indices`), used when not `train`.
        train: draw a random sorted subset of frames per access (`random_frame_indices`).
        text_fields: "title+ocr+asr" (rank 8, 256 tokens) or "title" (the baseline, 50 tokens).
        max_text_len: tokens including [CLS]/[SEP].
        nonfinite: non-finite feature values: "zero" them, or "drop" the frames holding any; either
            way the video is reported by id.
    """

    def __init__(
        self,
        entries: Sequence[dict],
        tokenizer,
        *,
        features: FeatureZip | None = None,
        raw_frames: RawFrameZips | None = None,
        transform: FrameTransform | None = None,
        max_frames: int = MAX_FRAMES,
        frame_sampling: str = "uniform",
        train: bool = False,
        text_fields: str = "title+ocr+asr",
        max_text_len: int = 256,
        ict_texts: bool = False,
        max_title_len: int = 64,
        nonfinite: str = "zero",
    ):
        for name, value, choices in (
            ("frame_sampling", frame_sampling, FRAME_SAMPLINGS),
            ("text_fields", text_fields, TEXT_FIELDS),
            ("nonfinite", nonfinite, NONFINITE),
        ):
            if value not in choices:
                raise ValueError(f"unknown {name} {value!r}; valid choices: {', '.join(choices)}")
        if features is not None and raw_frames is not None:
            raise ValueError("give features= (pre-extracted) or raw_frames= (pixels), not both")
        self.entries, self.tokenizer = list(entries), tokenizer
        self.features, self.raw_frames = features, raw_frames
        self.transform = transform or (FrameTransform() if raw_frames is not None else None)
        self.max_frames, self.frame_sampling, self.train = max_frames, frame_sampling, train
        self.text_fields, self.max_text_len = text_fields, max_text_len
        self.ict_texts, self.max_title_len, self.nonfinite = ict_texts, max_title_len, nonfinite
        self.ids = [str(e["id"]) for e in self.entries]
        self.labels = np.array([label_of(e) for e in self.entries], dtype=np.int64)
        source = features if features is not None else raw_frames
        self.missing_ids = [] if source is None else [v for v in self.ids if v not in source]
        if self.missing_ids:
            warnings.warn(
                f"{len(self.missing_ids)} of {len(self.ids)} videos have no frames and use text only, "
                f"e.g. {', '.join(self.missing_ids[:5])}",
                stacklevel=2,
            )
        self._missing = frozenset(self.missing_ids)

    def __len__(self) -> int:
        return len(self.entries)

    def _indices(self, n: int) -> np.ndarray:
        if self.train:
            return random_frame_indices(n, self.max_frames)
        return frame_indices(n, self.max_frames, self.frame_sampling)

    def _feature_frames(self, vid: str) -> tuple[np.ndarray, str]:
        feats = self.features.read(vid).astype(np.float32)  # fp16 (n, 768) -> fp32
        bad = ~np.isfinite(feats)
        if not bad.any():
            return feats[self._indices(len(feats))], ""
        note = f"video {vid}: {int(bad.sum())} non-finite feature values"
        if self.nonfinite == "zero":
            feats[bad] = 0.0
            note += " set to 0"
        else:
            feats = feats[~bad.any(1)]
            note += f"; dropped the frames holding them ({len(feats)} left)"
        warnings.warn(note, stacklevel=3)
        return feats[self._indices(len(feats))], note

    def _frames(self, vid: str) -> tuple[torch.Tensor, torch.Tensor, str]:
        T = self.max_frames
        shape = (
            (T, FEATURE_DIM) if self.raw_frames is None else (T, 3, self.transform.crop, self.transform.crop)
        )
        frames, mask, error = torch.zeros(shape), torch.zeros(T), ""
        if (self.features is None and self.raw_frames is None) or vid in self._missing:
            return frames, mask, "no frames" if vid in self._missing else ""
        try:
            if self.features is not None:
                picked, error = self._feature_frames(vid)
                picked = torch.from_numpy(picked)
            else:
                picked = self.raw_frames.read(
                    vid, self._indices(self.raw_frames.num_frames(vid)), self.transform
                )
        except FrameReadError as e:
            warnings.warn(f"{e}; using text only", stacklevel=3)
            return frames, mask, e.reason
        frames[: len(picked)] = picked
        mask[: len(picked)] = 1.0
        return frames, mask, error

    def __getitem__(self, i: int) -> dict:
        entry, vid = self.entries[i], self.ids[i]
        frames, mask, error = self._frames(vid)
        title, ocr, asr = entry.get("title") or "", ocr_text(entry), entry.get("asr") or ""
        texts = [title] if self.text_fields == "title" else [title, ocr, asr]
        item = {
            "frames": frames,
            "frame_mask": mask,
            "text_ids": encode_pieces(self.tokenizer, texts, self.max_text_len),
            "labels": int(self.labels[i]),
            "id": vid,
            "frame_error": error,
        }
        if self.ict_texts:
            item["title_ids"] = encode_pieces(self.tokenizer, [title], self.max_title_len)
            item["context_ids"] = encode_pieces(self.tokenizer, [ocr, asr], self.max_text_len)
        return item


def _pad_ids(seqs: Sequence[np.ndarray], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Variable-length id arrays → (B, L_max) int64 ids padded with `pad_id` and the (B, L_max) mask."""
    length = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), length, dtype=torch.long)
    for b, s in enumerate(seqs):
        ids[b, : len(s)] = torch.as_tensor(s)
        mask[b, : len(s)] = 1
    return ids, mask


def collate(items: Sequence[dict]) -> dict:
    """Items → batch: `frames` (B, T, ...), `frame_mask` (B, T), `text_ids`/`text_mask` (B, L) padded
    to the batch's longest text, `labels` (B,) int64, `id` list[str], `frame_error` list[str]; with
    ICT texts also `title_ids`/`title_mask` and `context_ids`/`context_mask`."""
    batch = {
        "frames": torch.stack([it["frames"] for it in items]),
        "frame_mask": torch.stack([it["frame_mask"] for it in items]),
        "labels": torch.tensor([it["labels"] for it in items], dtype=torch.long),
        "id": [it["id"] for it in items],
        "frame_error": [it["frame_error"] for it in items],
    }
    for key in ("text", "title", "context"):
        if f"{key}_ids" in items[0]:
            batch[f"{key}_ids"], batch[f"{key}_mask"] = _pad_ids([it[f"{key}_ids"] for it in items])
    return batch


def open_split(data_dir: str | Path, split: str, *, frames: str = "features") -> dict:
    """The annotation entries and frame source of one split: {"entries", "features", "raw_frames"}.

    Args:
        frames: "features" (zip_feats/{split}.zip), "raw" (zip_frames/{split}/) or "none" (text only).
    """
    choices = ("features", "raw", "none")
    if frames not in choices:
        raise ValueError(f"unknown frames {frames!r}; valid choices: {', '.join(choices)}")
    layout = check_layout(data_dir)
    if split not in layout:
        raise InputError(annotation_path(data_dir, split), f"not found; splits present: {', '.join(layout)}")
    found = layout[split]
    if frames == "features" and found["features"] is None:
        raise InputError(
            Path(data_dir) / "zip_feats" / f"{split}.zip",
            "not found (data_options frames: features reads zip_feats/, frames: raw reads zip_frames/)",
        )
    if frames == "raw" and found["frames"] is None:
        raise InputError(
            Path(data_dir) / "zip_frames" / split,
            "not found (data_options frames: raw reads zip_frames/, frames: features reads zip_feats/)",
        )
    return {
        "entries": read_annotations(found["annotations"]),
        "features": FeatureZip(found["features"]) if frames == "features" else None,
        "raw_frames": RawFrameZips(found["frames"]) if frames == "raw" else None,
    }


def scan_features(features: FeatureZip, ids: Sequence[str]) -> dict[str, str]:
    """Read every video's features once: {id: problem} for the missing, unreadable or non-finite ones."""
    problems = {}
    for vid in ids:
        try:
            feats = features.read(vid)
        except FrameReadError as e:
            problems[vid] = e.reason
            continue
        bad = int((~np.isfinite(feats)).sum())
        if bad:
            problems[vid] = f"{bad} non-finite values"
    return problems
