"""A YouTube-8M data folder opened for training: `load` → `YT8MData` (shards, whitelist, reader options).

The record format (layout, schema, parsing, segment classes, shard order) is `vmmlib.data.yt8m.reader`;
the frame stores and torch Datasets are `vmmlib.data.yt8m.datasets`. Frames are uint8, so there is no
`nonfinite` option here (they cannot hold inf or NaN; see `vmmlib.data.yt8m.reader`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vmmlib.data.record_checks import RecordRef
from vmmlib.data.yt8m.datasets import FrameStore, InferenceSegmentDataset, SegmentDataset, VideoDataset
from vmmlib.data.yt8m.reader import MAX_FRAMES, NUM_CLASSES, SegmentClasses, check_layout, holdout_shards
from vmmlib.io import cache_dir_for, tfrecord_index
from vmmlib.io.segment_truth import read_segment_truth
from vmmlib.options import check_choice

__all__ = ["SPLIT_ALIASES", "StoreView", "YT8MData", "load"]

SPLIT_ALIASES = {"train": "frame/train", "validate": "frame/validate", "test": "frame/test"}


class StoreView:
    """Some videos of one or more `FrameStore`s, with the interface the yt8m datasets read."""

    def __init__(self, parts: list[tuple[FrameStore, np.ndarray]]):
        self._items = [(store, int(r)) for store, rows in parts for r in rows]
        self.meta = [store.meta[r] for store, r in self._items]
        self.ids = [store.ids[r] for store, r in self._items]

    def __len__(self) -> int:
        return len(self._items)

    def ref(self, i: int) -> RecordRef:
        """Where video i's record lives."""
        store, r = self._items[i]
        return store.ref(r)

    def quantized(self, i: int) -> np.ndarray:
        """Video i's frames, (L, 1152) uint8."""
        store, r = self._items[i]
        return store.quantized(r)

    def num_frames(self, i: int, max_frames: int = MAX_FRAMES) -> int:
        return min(len(self.quantized(i)), max_frames)


@dataclass
class YT8MData:
    """A YouTube-8M folder opened for training: the whitelist, the shards, the reader options.

    The fields are `load`'s options (see there). Recipe settings are not: TTA shifts are prediction
    options and treating unrated classes as negatives is an objective option (`vmmlib.tasks.yt8m`).
    """

    data_dir: Path
    classes: SegmentClasses
    files: dict[str, list[Path]]
    normalize: bool = True
    window: int | None = None
    max_frames: int = MAX_FRAMES
    n_holdout: int = 300
    train_all: bool = False
    cache: bool = True
    stream: bool = False
    _stores: dict = field(default_factory=dict)
    _shard_sizes: dict = field(default_factory=dict)
    _truth: dict | None = None

    def model_overrides(self, text_model_dir: str = "") -> dict:
        """What a model must match in this data: the 3,862-way head (fine-tuning reads the rated columns)."""
        if text_model_dir:
            raise ValueError("yt8m has no text: its models take frames only; leave text_model_dir empty")
        return {"num_classes": NUM_CLASSES}

    def split_name(self, split: str) -> str:
        """A split's full name (`train` → `frame/train`); ValueError naming the splits present."""
        split = SPLIT_ALIASES.get(split, split)
        check_choice("split", split, [*SPLIT_ALIASES, *self.files])
        return split

    def store(self, split: str) -> FrameStore:
        """All videos of a frame-level split (uint8 frames cached on disk on first use)."""
        split = self.split_name(split)
        if split not in self._stores:
            cache = cache_dir_for(self.data_dir) / split.replace("/", "-") if self.cache else None
            self._stores[split] = FrameStore(self.files[split], cache)
        return self._stores[split]

    def rows(self, split: str, shards=None) -> np.ndarray:
        """Positions in `store(split)` of the videos of some shards (indices into the name-sorted files)."""
        split = self.split_name(split)
        if split not in self._shard_sizes:  # records per shard, from the record headers only
            self._shard_sizes[split] = [len(tfrecord_index(p, verify_crc=False)) for p in self.files[split]]
        starts = np.concatenate([[0], np.cumsum(self._shard_sizes[split])]).astype(np.int64)
        shards = np.arange(len(starts) - 1) if shards is None else np.asarray(shards, np.int64)
        return np.concatenate(
            [np.arange(starts[s], starts[s + 1]) for s in shards] or [np.zeros(0, np.int64)]
        )

    def view(self, split: str, shards=None) -> StoreView:
        """The videos of some shards of a split (indices into `files[split]`, sorted by name; None: all)."""
        return StoreView([(self.store(split), self.rows(split, shards))])

    def holdout(self) -> np.ndarray:
        """Seed 003's hold-out: the first `n_holdout` validate shards in the seed's enumeration order
        (capped at a quarter of the shards, so small data keeps shards to fine-tune on)."""
        paths = self.files["frame/validate"]
        n = min(self.n_holdout, max(1, len(paths) // 4))
        held, _ = holdout_shards(paths, n)
        return np.array(sorted(paths.index(p) for p in held))

    def truth(self) -> dict[tuple[str, int], float]:
        """{("vid:start", class): rated score} of every validate video (`read_segment_truth`)."""
        if self._truth is None:
            meta = self.store("frame/validate").meta
            self._truth = read_segment_truth(
                [m["id"] for m in meta], [m["segment_start_times"] for m in meta],
                [m["segment_labels"] for m in meta], [m["segment_scores"] for m in meta],
            )  # fmt: skip
        return self._truth

    def segment_dataset(self, view: StoreView) -> SegmentDataset:
        """The rated segments of `view` (`label_weights` 1 at the rated entries)."""
        return SegmentDataset(view, normalize=self.normalize, max_frames=self.max_frames)

    def inference_dataset(self, view: StoreView, shift: int) -> InferenceSegmentDataset:
        """Every 5-frame bag of `view`, frames rolled by the TTA `shift`."""
        return InferenceSegmentDataset(
            view, shift=shift, normalize=self.normalize, max_frames=self.max_frames
        )

    def video_dataset(self, view: StoreView, *, train: bool) -> VideoDataset:
        """Video-label items of `view`: a random window when training, the centred one otherwise."""
        return VideoDataset(
            view,
            window=self.window,
            random_window=train,
            max_frames=self.max_frames,
            normalize=self.normalize,
        )


def load(
    data_dir: str | Path,
    *,
    text_model_dir: str = "",
    normalize: bool = True,
    window: int | None = None,
    max_frames: int = MAX_FRAMES,
    n_holdout: int = 300,
    train_all: bool = False,
    cache: bool = True,
    stream: bool = False,
) -> YT8MData:
    """Open a YouTube-8M folder (the notebooks' `data_options` are these keyword arguments).

    Args:
        text_model_dir: must stay empty: YouTube-8M has no text, so no text model can be used.
        normalize: per-frame L2 normalisation of the 1152-d frames (hughshaoqz, all nine models).
        window: frames per pretraining video: 5 = a random contiguous window (the seed's BERT models;
            the centred one in evaluation), None = the whole video zero-padded to `max_frames`.
        n_holdout: validate shards held out (seed order): pretraining evaluates on them, `train_all`
            trains on the rest, and the `holdout` fold scheme validates on them; one setting for
            every notebook, so pretraining never sees a fine-tuning fold's held-out shards.
        train_all: pretrain on frame/train plus the non-held-out validate shards (`--train_all`;
            leaks into `scheme="shard"` folds, which hold out every shard once).
        cache: memory-map frames from a cache under `<data_dir>/.vmm_cache` (False: read into memory).
        stream: pretrain on a `VideoStream` (shards streamed with a shuffle buffer, bounded memory:
            the v2 frame-level train split is ~1.5 TB); `make_loader` gives it no sampler.
    """
    if text_model_dir:
        raise ValueError("yt8m has no text: its models take frames only; leave text_model_dir empty")
    data_dir = Path(data_dir)
    files = check_layout(data_dir)
    if window is not None and window < 1:
        raise ValueError(f"window must be None or >= 1, got {window}")
    return YT8MData(
        data_dir=data_dir,
        classes=SegmentClasses.read(data_dir / "segment_label_ids.csv"),
        files=files,
        normalize=normalize,
        window=window,
        max_frames=max_frames,
        n_holdout=n_holdout,
        train_all=train_all,
        cache=cache,
        stream=stream,
    )
