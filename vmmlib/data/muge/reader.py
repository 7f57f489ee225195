"""MUGE / Chinese-CLIP text ↔ image retrieval data (SPEC §1.3, §9.2): readers, text, datasets, batches.

    data_dir/{train,valid,test}_imgs.tsv      image_id \\t base64(image)
    data_dir/{train,valid,test}_texts.jsonl   {"text_id", "text", "image_ids"}; test: image_ids []
    data_dir/lmdb/{split}/imgs, pairs         Chinese-CLIP's LMDB layout (`vmm prepare muge`, `muge_prepare`)

Training reads (image, text) pairs from the LMDB; evaluation reads the texts of the JSONL and the
images of the LMDB gallery. Text follows Chinese-CLIP: lower-cased, curly double quotes made
straight (its `_preprocess_text`), then `[CLS] tokens[:L-2] [SEP]` zero-padded to the context
length L (52 in Chinese-CLIP, 24 in Online-CNCLIP).

Items use the shared batch keys. An image is a clip of T ≥ 1 frames: `frames` (T, 3, H, W) with
`frame_mask` (T,); a still image has T = 1, and a multi-frame image file (animated GIF/WebP,
multi-page TIFF) gives up to `max_frames` frames spread uniformly over it. `collate` pads clips of
different lengths in a batch; the model averages the embeddings of the real frames.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vmmlib.data.image_transforms import EvalTransform, build_transform
from vmmlib.data.muge.prepare import SPLITS, split_files
from vmmlib.data.tokenize import encode_texts, tokenizer_for
from vmmlib.io.lmdb_store import LMDBSplit
from vmmlib.io.safe import DEFAULT_LIMITS, InputError, Limits, iter_jsonl, open_image

CONTEXT_LENGTH = 52  # Chinese-CLIP's default; Online-CNCLIP uses 24

__all__ = [
    "CONTEXT_LENGTH",
    "SPLITS",
    "MugeImageDataset",
    "MugePairDataset",
    "MugeTextDataset",
    "collate",
    "decode_frames",
    "lmdb_split",
    "preprocess_text",
    "read_texts",
    "tokenize",
]


def preprocess_text(text: str) -> str:
    """Chinese-CLIP's text normalisation: lower-case, “ and ” → ". (It leaves ‘ ’ alone; so do we.)"""
    return text.lower().replace("“", '"').replace("”", '"')


def tokenize(
    tokenizer, texts: Sequence[str], context_length: int = CONTEXT_LENGTH
) -> tuple[np.ndarray, np.ndarray]:
    """Normalise and tokenise: `[CLS] wordpieces[:L-2] [SEP]`, zero-padded to L = `context_length`.

    Args:
        tokenizer: a BERT WordPiece tokenizer (`vmmlib.data.tokenize.load_tokenizer`), e.g. on the
            Chinese BERT vocabulary Chinese-CLIP ships (21128 tokens).

    Returns:
        ids (N, L) int64 and mask (N, L) int64, the same ids as `cn_clip.clip.tokenize`.
    """
    return encode_texts(tokenizer, [preprocess_text(t) for t in texts], context_length)


def read_texts(path: str | Path, *, limits: Limits = DEFAULT_LIMITS) -> list[dict]:
    """A `{split}_texts.jsonl` → [{"text_id", "text", "image_ids"}] in file order.

    Read through `vmmlib.io.safe` (streamed, strict UTF-8, bounded line length and JSON depth).

    Raises:
        InputError: naming the file and line of invalid UTF-8, a malformed line, a field of the wrong
            type or a repeated text_id.
    """
    rows, seen = [], {}
    for line_no, obj in iter_jsonl(path, limits=limits, what="texts file"):
        problem = _text_problem(obj)
        if problem:
            raise InputError(path, problem, f"line {line_no}")
        text_id = obj["text_id"]
        if text_id in seen:
            raise InputError(
                path, f"text_id {text_id} repeated (first on line {seen[text_id]})", f"line {line_no}"
            )
        seen[text_id] = line_no
        rows.append({"text_id": text_id, "text": obj["text"], "image_ids": list(obj["image_ids"])})
    if not rows:
        raise InputError(path, "holds no queries")
    return rows


def _valid_id(value) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _text_problem(obj) -> str | None:
    """What is wrong with one parsed query line (None if nothing)."""
    if not isinstance(obj, dict):
        return f"expected a JSON object, got {type(obj).__name__}"
    missing = [k for k in ("text_id", "text", "image_ids") if k not in obj]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    if not _valid_id(obj["text_id"]) or not isinstance(obj["text"], str):
        return f"text_id must be an int and text a string, got {obj['text_id']!r}, {obj['text']!r}"[:300]
    if not isinstance(obj["image_ids"], list) or not all(_valid_id(i) for i in obj["image_ids"]):
        return f"image_ids must be a list of ints, got {obj['image_ids']!r}"[:300]
    return None


def lmdb_split(data_dir: str | Path, split: str, lmdb_dir: str | Path | None = None) -> LMDBSplit:
    """The prepared LMDB of a split (`data_dir/lmdb/<split>` unless `lmdb_dir` is given)."""
    split_files(data_dir, split)  # checks the split name
    return LMDBSplit(Path(lmdb_dir or Path(data_dir) / "lmdb") / split)


def decode_frames(
    data: bytes,
    max_frames: int = 1,
    *,
    path: str | Path | None = None,
    where: str | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> list[Image.Image]:
    """Decode an image file into its frames: 1 for a still image, up to `max_frames` spread uniformly
    (first and last included) over a multi-frame file. Frames come back loaded, in their own mode.

    The size is checked from the header first (`limits.max_image_pixels`: a decompression bomb is
    never decoded); an undecodable image is an InputError naming `path` and `where` (the image id).
    """
    with open_image(data, path=path, where=where, limits=limits) as image:
        try:
            n = getattr(image, "n_frames", 1)
            picks = np.unique(np.linspace(0, n - 1, min(n, max_frames)).round().astype(int)) if n > 1 else [0]
            frames = []
            for i in picks:
                image.seek(int(i))
                frames.append(image.copy())
        except (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError) as e:
            raise InputError(path, f"corrupt image ({e})", where) from None
    return frames


def _frames_tensor(frames: list[Image.Image], transform: Callable) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.stack([transform(f) for f in frames])  # (T, 3, H, W)
    return x, torch.ones(len(frames), dtype=torch.float32)


def _stored_frames(store: LMDBSplit, image_id, max_frames: int) -> list[Image.Image]:
    """The frames of a stored image; errors name the LMDB and the image id."""
    return decode_frames(
        store.image_bytes(image_id), max_frames, path=store.root / "imgs", where=f"image {image_id}"
    )


class MugePairDataset(Dataset):
    """The (image, text) pairs of a prepared split, in LMDB key order (the training set).

    Items: `frames` (T, 3, H, W) float32, `frame_mask` (T,), `text_ids`/`text_mask` (L,) int64,
    `image_id`, `text_id` (as stored), `id` = "text_id/image_id".

    Args:
        store: the split's `LMDBSplit` (`lmdb_split(data_dir, split)`).
        tokenizer: BERT WordPiece tokenizer; texts are tokenised on access.
        transform: PIL image → (3, H, W) tensor; default `EvalTransform(224)`. Use
            `image_transforms.TrainTransform` for Chinese-CLIP's augmentation.
        context_length: text length L.
        max_frames: most frames taken from a multi-frame image.
    """

    def __init__(
        self,
        store: LMDBSplit,
        tokenizer,
        transform: Callable | None = None,
        *,
        context_length: int = CONTEXT_LENGTH,
        max_frames: int = 1,
    ):
        self.store, self.tokenizer = store, tokenizer
        self.transform = transform or EvalTransform()
        self.context_length, self.max_frames = context_length, max_frames
        self._len = store.num_samples

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> dict:
        image_id, text_id, text = self.store.pair(i)
        frames, mask = _frames_tensor(_stored_frames(self.store, image_id, self.max_frames), self.transform)
        ids, text_mask = tokenize(self.tokenizer, [text], self.context_length)
        return {
            "frames": frames,
            "frame_mask": mask,
            "text_ids": torch.from_numpy(ids[0]),
            "text_mask": torch.from_numpy(text_mask[0]),
            "image_id": image_id,
            "text_id": text_id,
            "id": f"{text_id}/{image_id}",
        }


class MugeImageDataset(Dataset):
    """A gallery of images from a prepared split: items `frames`, `frame_mask`, `image_id`, `id`.

    Args:
        store: the split's `LMDBSplit`.
        image_ids: which images, in this order; default every stored id (ints where numeric),
            sorted numerically.
        transform: default `EvalTransform(224)` (bicubic squash, no crop).
    """

    def __init__(
        self,
        store: LMDBSplit,
        image_ids: Sequence | None = None,
        transform: Callable | None = None,
        *,
        max_frames: int = 1,
    ):
        self.store = store
        if image_ids is None:
            keys = store.image_ids()
            numeric = all(k.isdigit() for k in keys)
            image_ids = sorted(int(k) for k in keys) if numeric else sorted(keys)
        self.image_ids = list(image_ids)
        self.transform = transform or EvalTransform()
        self.max_frames = max_frames

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, i: int) -> dict:
        image_id = self.image_ids[i]
        frames, mask = _frames_tensor(_stored_frames(self.store, image_id, self.max_frames), self.transform)
        return {"frames": frames, "frame_mask": mask, "image_id": image_id, "id": str(image_id)}


class MugeTextDataset(Dataset):
    """The queries of a `{split}_texts.jsonl` (or rows from `read_texts`), tokenised up front.

    Items: `text_ids`/`text_mask` (L,) int64, `text_id`, `id`; `self.image_ids[i]` holds the
    ground-truth image ids of query i (empty on test).
    """

    def __init__(self, texts: str | Path | list[dict], tokenizer, *, context_length: int = CONTEXT_LENGTH):
        rows = read_texts(texts) if isinstance(texts, (str, Path)) else list(texts)
        self.text_ids = [r["text_id"] for r in rows]
        self.texts = [r["text"] for r in rows]
        self.image_ids = [list(r.get("image_ids", [])) for r in rows]
        ids, mask = tokenize(tokenizer, self.texts, context_length)
        self._ids, self._mask = torch.from_numpy(ids), torch.from_numpy(mask)

    def __len__(self) -> int:
        return len(self.text_ids)

    def __getitem__(self, i: int) -> dict:
        return {
            "text_ids": self._ids[i],
            "text_mask": self._mask[i],
            "text_id": self.text_ids[i],
            "id": str(self.text_ids[i]),
        }


def collate(items: list[dict]) -> dict:
    """Stack items into a batch; clips are zero-padded to the longest (B, T, 3, H, W) with a (B, T) mask.
    Id-like values (`image_id`, `text_id`, `id`) become lists."""
    batch: dict = {}
    if "frames" in items[0]:
        T = max(it["frames"].shape[0] for it in items)
        frames = items[0]["frames"].new_zeros((len(items), T, *items[0]["frames"].shape[1:]))
        mask = torch.zeros(len(items), T)
        for b, it in enumerate(items):
            t = it["frames"].shape[0]
            frames[b, :t], mask[b, :t] = it["frames"], it["frame_mask"]
        batch.update(frames=frames, frame_mask=mask)  # (B, T, 3, H, W), (B, T)
    for key in ("text_ids", "text_mask"):
        if key in items[0]:
            batch[key] = torch.stack([it[key] for it in items])  # (B, L)
    for key in ("image_id", "text_id", "id"):
        if key in items[0]:
            batch[key] = [it[key] for it in items]
    return batch


# --- an opened MUGE folder (what the task's `load` returns) -----------------------------------


@dataclass
class MugeData:
    """An opened MUGE folder: tokenizer, image settings and the prepared LMDB splits (`load`)."""

    data_dir: Path
    tokenizer: object
    context_length: int
    image_size: int
    use_augment: bool
    max_frames: int
    lmdb_dir: Path
    _texts: dict = field(default_factory=dict, repr=False)
    _stores: dict = field(default_factory=dict, repr=False)  # one LMDB handle per split and process

    def model_overrides(self, text_model_dir: str = "") -> dict:
        """What a CLIP dual encoder must match in this data: the image size, and the vocabulary of the
        tokenizer (a `text_model_dir` brings its own)."""
        return {
            "image_size": self.image_size,
            **({} if text_model_dir else {"vocab_size": len(self.text_tokenizer())}),
        }

    def text_tokenizer(self):
        """The tokenizer; an error naming the options when the folder has none (e.g. 40_ensemble needs none)."""
        if self.tokenizer is None:
            raise FileNotFoundError(
                f"no tokenizer: {self.data_dir / 'vocab.txt'} not found; pass data_options vocab_path "
                "(Chinese-CLIP's vocab.txt) or a text_model_dir"
            )
        return self.tokenizer

    def store(self, split: str):
        if split not in self._stores:
            store = lmdb_split(self.data_dir, split, self.lmdb_dir)
            if not store.has_images:
                raise FileNotFoundError(
                    f"{self.lmdb_dir / split} holds no prepared LMDB: run `vmm prepare muge {self.data_dir}`"
                )
            self._stores[split] = store
        return self._stores[split]

    def texts(self, split: str) -> list[dict]:
        if split not in self._texts:
            self._texts[split] = read_texts(split_files(self.data_dir, split)[1])
        return self._texts[split]

    def queries(self, split: str, rows=None) -> MugeTextDataset:
        texts = self.texts(split)
        texts = texts if rows is None else [texts[int(i)] for i in rows]
        return MugeTextDataset(texts, self.text_tokenizer(), context_length=self.context_length)

    def gallery(self, split: str) -> MugeImageDataset:
        return MugeImageDataset(self.store(split), transform=EvalTransform(self.image_size),
                                  max_frames=self.max_frames)  # fmt: skip

    def pairs(self, split: str, train: bool = True) -> MugePairDataset:
        transform = build_transform(train, self.image_size, self.use_augment)
        return MugePairDataset(self.store(split), self.text_tokenizer(), transform,
                                 context_length=self.context_length, max_frames=self.max_frames)  # fmt: skip


def load(
    data_dir: str | Path,
    *,
    text_model_dir: str | Path = "",
    vocab_path: str | Path | None = None,
    context_length: int = CONTEXT_LENGTH,
    image_size: int = 224,
    use_augment: bool = True,
    max_frames: int = 1,
    lmdb_dir: str | Path | None = None,
) -> MugeData:
    """Open a MUGE folder (the notebooks' `data_options` are these keyword arguments).

    Args:
        text_model_dir: a local Hugging Face text model whose saved tokenizer tokenises the queries.
        vocab_path: the BERT vocabulary otherwise (default `data_dir/vocab.txt`; the real release has
            none: give Chinese-CLIP's 21,128-token vocabulary).
        context_length: text length L (52 Chinese-CLIP, 24 Online-CNCLIP).
        image_size: the side images are squashed (evaluation) or cropped (training) to.
        use_augment: training transform with AutoAugment (Chinese-CLIP `--use-augment`), else the squash.
        max_frames: frames taken from a multi-frame image (their embeddings are averaged).
        lmdb_dir: the prepared LMDB root (default `data_dir/lmdb`).
    """
    data_dir = Path(data_dir)
    vocab = Path(vocab_path) if vocab_path else data_dir / "vocab.txt"
    if context_length < 3 or image_size < 8 or max_frames < 1:
        raise ValueError(f"need context_length >= 3, image_size >= 8, max_frames >= 1; got "
                         f"{context_length}, {image_size}, {max_frames}")  # fmt: skip
    return MugeData(
        data_dir=data_dir, tokenizer=tokenizer_for(text_model_dir, vocab) if text_model_dir or vocab.is_file() else None,
        context_length=context_length,
        image_size=image_size, use_augment=use_augment, max_frames=max_frames,
        lmdb_dir=Path(lmdb_dir) if lmdb_dir else data_dir / "lmdb",
    )  # fmt: skip
