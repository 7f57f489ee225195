"""Everything exact resume needs outside the training loop: safetensors weights, atomic checkpoint
directories, RNG states, and a data order that is a function of (seed, epoch).

Every file and directory here is written under a temporary name and renamed into place, so a crash
mid-write leaves the previous version intact and never a half-written one where a reader looks.
A directory cannot be swapped with one `rename` (POSIX refuses to replace a non-empty directory), so
`write_dir_atomically` moves the old one to `<name>.prev` first; `find_checkpoint` falls back to
`.prev` when a crash hit between the two renames. A directory counts as complete only if its marker
file (written last) is present. Weights holding NaN or inf are refused (RuntimeError).

`fit`'s training checkpoint (`checkpoints/last/`) holds model.safetensors (raw weights),
optimizer.pt, scheduler.pt, ema.safetensors (with EMA), swa.safetensors (with SWA: the snapshots,
keys "<step>/<name>"), rng.pt (a list, one RNG state per process),
history.json (the history rows so far) and state.json (step, data position, best metric, ...),
written last as the completeness marker. `checkpoints/best/` holds model.safetensors + best.json.

`TrainState` is what state.json holds; `history_row` / `write_history_csv` keep history.csv.

`make_loader` / `EpochShuffleSampler` / `start_epoch`: batches of epoch e depend only on (seed, e),
so a resumed run re-creates the epoch's order and skips what was consumed (`resumable_batches`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import shutil
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import safetensors.torch
import torch
from accelerate.data_loader import get_sampler, skip_first_batches
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, RandomSampler, Sampler, SequentialSampler

logger = logging.getLogger(__name__)

__all__ = [
    "EpochShuffleSampler",
    "TrainState",
    "assert_finite",
    "capture_rng_state",
    "clear_fit_outputs",
    "find_checkpoint",
    "history_frame",
    "history_row",
    "load_training_checkpoint",
    "load_weights",
    "make_loader",
    "restore_rng_state",
    "resumable_batches",
    "rng_preserved",
    "save_best_checkpoint",
    "save_training_checkpoint",
    "save_weights",
    "start_epoch",
    "write_dir_atomically",
    "write_history_csv",
]


def assert_finite(tensors: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise RuntimeError naming the first floating tensor in `tensors` that holds NaN or inf."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise RuntimeError(f"refusing to save {what}: tensor {name!r} holds non-finite values")


def _fsync(path: Path) -> None:
    """Flush a file (or, where the OS allows, a directory entry) to disk."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # directories cannot be opened on some platforms
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_weights(model: nn.Module, path: str | Path, *, metadata: dict[str, str] | None = None) -> Path:
    """Write `model.state_dict()` to a safetensors file, atomically.

    Tied (shared) tensors are stored once, as `safetensors.torch.save_model` does. The file is written
    to a temporary name in the same directory and renamed over `path`.

    Raises:
        RuntimeError: if any floating parameter or buffer is NaN or inf (nothing is written).
    """
    path = Path(path)
    assert_finite(model.state_dict(), f"weights to {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        safetensors.torch.save_model(model, str(tmp), metadata=metadata, force_contiguous=True)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync(path.parent)
    return path


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a safetensors file written by `save_weights` into `model`, strictly (no missing or
    unexpected keys; tied tensors are restored), except the weights of towers the model was built
    without: a model's `towers_not_built()` names their prefixes (a text + video fine-tune starts from
    a pretraining with audio), and their weights are left out with a warning. Returns `model`.

    Raises:
        FileNotFoundError: no file (naming `pretrain_dir`).
        RuntimeError: a key missing from the file, or one the model has no place for (naming `path`).
    """
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"{path} not found: pretrain_dir (a finished 10_pretrain run) or the fine-tuning run folder must "
            "hold the model.safetensors its run wrote"
        )
    first = next(model.parameters(), None)
    device = str(first.device) if first is not None else "cpu"
    missing, unexpected = safetensors.torch.load_model(model, str(path), strict=False, device=device)
    absent = tuple(model.towers_not_built()) if hasattr(model, "towers_not_built") else ()
    left_out = sorted(k for k in unexpected if absent and k.startswith(absent))
    unexpected = sorted(set(unexpected) - set(left_out))
    if missing or unexpected:
        raise RuntimeError(
            f"{path} does not fit {type(model).__name__}: "
            + "; ".join(
                f"{what} {len(keys)} key(s): {', '.join(keys[:6])}{', …' if len(keys) > 6 else ''}"
                for what, keys in (("missing", sorted(missing)), ("unexpected", unexpected))
                if keys
            )
        )
    if left_out:
        warnings.warn(
            f"{path}: {len(left_out)} weights of towers {type(model).__name__} was built without "
            f"({', '.join(p.rstrip('.') for p in absent)}) left out",
            stacklevel=2,
        )
    return model


def write_dir_atomically(final_dir: str | Path, write: Callable[[Path], None], *, marker: str) -> Path:
    """Create directory `final_dir` by calling `write(tmp_dir)` and renaming `tmp_dir` into place.

    Args:
        final_dir: the directory to create or replace.
        write: fills the temporary directory; must write `marker` last.
        marker: name of the file whose presence marks a complete directory.

    If `write` raises, the temporary directory is removed and `final_dir` is untouched.
    """
    final_dir = Path(final_dir)
    parent = final_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    for stale in parent.glob(f".{final_dir.name}.tmp-*"):  # left by a process killed mid-write
        shutil.rmtree(stale, ignore_errors=True)
    tmp = parent / f".{final_dir.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    try:
        write(tmp)
        if not (tmp / marker).is_file():
            raise RuntimeError(f"checkpoint writer did not write its marker file {marker!r}")
        for f in tmp.iterdir():
            _fsync(f)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    prev = parent / f"{final_dir.name}.prev"
    if final_dir.exists():
        shutil.rmtree(prev, ignore_errors=True)
        os.replace(final_dir, prev)
    os.replace(tmp, final_dir)
    _fsync(parent)
    shutil.rmtree(prev, ignore_errors=True)
    return final_dir


def find_checkpoint(final_dir: str | Path, *, marker: str) -> Path | None:
    """Return `final_dir` if it is complete, else its `.prev` copy if that is complete, else None."""
    final_dir = Path(final_dir)
    for d in (final_dir, final_dir.with_name(final_dir.name + ".prev")):
        if (d / marker).is_file():
            return d
    return None


def capture_rng_state() -> dict:
    """The python, numpy, torch CPU and (if initialised) CUDA generator states, in a form that
    `torch.load(..., weights_only=True)` accepts."""
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of `capture_rng_state`."""
    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def rng_preserved() -> Iterator[None]:
    """Run a block without shifting the python/numpy/torch RNG streams seen after it."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


# --------------------------------------------------------------------------- fit's run folder


def save_training_checkpoint(
    last_dir: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    ema_state: Mapping[str, torch.Tensor] | None,
    rng_states: list[dict],
    state: dict[str, Any],
    history_rows: list[dict[str, Any]],
    swa_state: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write `fit`'s resumable state to `last_dir` atomically (see the module docstring).

    Raises:
        RuntimeError: if the model or EMA weights hold NaN/inf; nothing is written then.
    """
    assert_finite(model.state_dict(), "checkpoint model weights")
    if ema_state is not None:
        assert_finite(ema_state, "checkpoint EMA weights")

    def write(tmp: Path) -> None:
        save_weights(model, tmp / "model.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        if ema_state is not None:
            safetensors.torch.save_file(dict(ema_state), str(tmp / "ema.safetensors"))
        if swa_state is not None:
            safetensors.torch.save_file(dict(swa_state), str(tmp / "swa.safetensors"))
        torch.save(rng_states, tmp / "rng.pt")
        (tmp / "history.json").write_text(json.dumps(history_rows))  # exact floats, unlike CSV
        (tmp / "state.json").write_text(json.dumps(state, indent=1))  # the marker: written last

    return write_dir_atomically(last_dir, write, marker="state.json")


def load_training_checkpoint(
    last_dir: str | Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
) -> dict[str, Any]:
    """Load model, optimizer and scheduler states in place from `last_dir` (None: leave that one be).

    Returns:
        {"state": dict, "history_rows": list, "rng_states": list, "ema_state": dict or None,
        "swa_state": dict or None}.
    """
    last_dir = Path(last_dir)
    load_weights(model, last_dir / "model.safetensors")
    if optimizer is not None:
        optimizer.load_state_dict(
            torch.load(last_dir / "optimizer.pt", map_location="cpu", weights_only=True)
        )
    if scheduler is not None:
        scheduler.load_state_dict(
            torch.load(last_dir / "scheduler.pt", map_location="cpu", weights_only=True)
        )
    ema_file, swa_file = last_dir / "ema.safetensors", last_dir / "swa.safetensors"
    return {
        "state": json.loads((last_dir / "state.json").read_text()),
        "history_rows": json.loads((last_dir / "history.json").read_text()),
        "rng_states": torch.load(last_dir / "rng.pt", map_location="cpu", weights_only=True),
        "ema_state": safetensors.torch.load_file(str(ema_file)) if ema_file.is_file() else None,
        "swa_state": safetensors.torch.load_file(str(swa_file)) if swa_file.is_file() else None,
    }


def save_best_checkpoint(
    best_dir: str | Path, model: nn.Module, *, step: int, metric: str, value: float, greater_is_better: bool
) -> Path:
    """Write `best_dir/model.safetensors` and `best_dir/best.json` ({step, metric, value, ...}) atomically."""

    def write(tmp: Path) -> None:
        save_weights(model, tmp / "model.safetensors")
        info = {"step": step, "metric": metric, "value": value, "greater_is_better": greater_is_better}
        (tmp / "best.json").write_text(json.dumps(info, indent=1))

    return write_dir_atomically(best_dir, write, marker="best.json")


def history_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """History rows as a DataFrame; columns are the union in order of first appearance."""
    columns: dict[str, None] = {"step": None}
    for r in rows:
        columns.update(dict.fromkeys(r))
    return pd.DataFrame(rows, columns=list(columns))


def write_history_csv(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Rewrite `path` (history.csv) from `rows`, atomically.

    A value that was logged but is not finite is written as `nan` / `inf` / `-inf`; a blank cell means
    nothing was logged there (e.g. no evaluation at that step).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    spelled = [
        {k: (repr(v) if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
        for r in rows
    ]
    history_frame(spelled).to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


def clear_fit_outputs(out_dir: str | Path) -> list[Path]:
    """Remove what an earlier `fit` wrote in `out_dir` (model, history, checkpoints); return the paths."""
    out_dir = Path(out_dir)
    old = [out_dir / "model.safetensors", out_dir / "history.csv"]
    old += [out_dir / "checkpoints" / n for n in ("last", "last.prev", "best", "best.prev")]
    old = [p for p in old if p.exists()]
    if old:
        logger.warning("starting afresh: removing %s", [str(p) for p in old])
    for p in old:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    return old


# --------------------------------------------------------------------------- fit's progress


@dataclass
class TrainState:
    """`fit`'s progress: what `checkpoints/last/state.json` stores.

    Attributes:
        step: optimiser steps taken (skipped non-finite steps included).
        epoch: the data position's epoch.
        batch_in_epoch: batches of `epoch` already consumed.
        best_metric: the best finite evaluation so far, or None.
        best_step: its step, or None.
        nonfinite_in_a_row: consecutive skipped steps.
        last_eval_step: step of the last evaluation, or None.
        window: sums over the finite steps since the last history row ({"n", "skipped", "sums"}).
        seed: `fit`'s seed for the run that wrote the checkpoint.
        num_processes: how many processes wrote it.
        fingerprint: the caller's fingerprint of what made the run (e.g. its parameters' hash).
        fit_args: the arguments of `fit` that shape the result (`vmmlib.train.config.result_args`).
    """

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    nonfinite_in_a_row: int = 0
    last_eval_step: int | None = None
    window: dict[str, Any] = field(default_factory=lambda: {"n": 0, "skipped": 0, "sums": {}})
    seed: int = 0
    num_processes: int = 1
    fingerprint: str | None = None
    fit_args: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainState:
        """From `state.json`'s content; keys this version does not know are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def accumulate(self, values: Mapping[str, float]) -> None:
        """Add one finite step's logged values to the window."""
        self.window["n"] += 1
        for k, v in values.items():
            self.window["sums"][k] = self.window["sums"].get(k, 0.0) + v

    def pop_window(self) -> dict[str, float]:
        """`train/<name>` means over the window's finite steps and `train/skipped`; starts a new window."""
        n, sums, skipped = self.window["n"], self.window["sums"], self.window["skipped"]
        self.window = {"n": 0, "skipped": 0, "sums": {}}
        return {
            **{f"train/{k}": (s / n if n else math.nan) for k, s in sums.items()},
            "train/skipped": skipped,
        }


def history_row(rows: list[dict[str, Any]], step: int, epoch: int) -> dict[str, Any]:
    """The history row of `step`, appended if missing (steps only grow, so it can only be the last)."""
    if not rows or rows[-1]["step"] != step:
        rows.append({"step": step, "epoch": epoch})
    return rows[-1]


# --------------------------------------------------------------------------- a data order resume can replay


def _epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A well-mixed 32-bit seed for (seed, epoch, stream); (0, 1) and (1, 0) differ."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


class EpochShuffleSampler(Sampler[int]):
    """A random permutation of `range(num_samples)` that depends only on (seed, epoch).

    Call `set_epoch(epoch)` before iterating (Accelerate's loaders and `fit` do).
    """

    def __init__(self, num_samples: int, *, seed: int = 0):
        self.num_samples = num_samples
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(_epoch_seed(self.seed, self.epoch))
        yield from torch.randperm(self.num_samples, generator=g).tolist()


def _seed_worker(worker_id: int) -> None:
    """Seed numpy and python `random` in a worker from torch's per-worker seed."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    collate_fn: Callable | None = None,
    num_workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader whose sample order and worker seeds depend only on (seed, epoch).

    With `shuffle`, the order comes from `EpochShuffleSampler(len(dataset), seed=seed)`; `fit` calls
    its `set_epoch` at each epoch, so a resumed run sees the same batches. Workers seed numpy and
    `random` from torch's per-worker seed.

    An `IterableDataset` (e.g. a shard stream) orders itself and gets no sampler: `shuffle` is then
    its own business (a seeded shuffle buffer), and `fit` calls its `set_epoch`.
    """
    if isinstance(dataset, IterableDataset):
        sampler = None
    else:
        sampler = EpochShuffleSampler(len(dataset), seed=seed) if shuffle else SequentialSampler(dataset)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate_fn,
        num_workers=num_workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        generator=generator,
        worker_init_fn=_seed_worker if num_workers > 0 else None,
    )


def start_epoch(loader: DataLoader, epoch: int, *, seed: int, prepared: DataLoader | None = None) -> None:
    """Make the batches of epoch `epoch` a function of (seed, epoch) only; call before iterating.

    Calls `set_epoch` on `prepared` (the loader Accelerate made from `loader`), the sampler and the
    dataset where they have one. A plain `RandomSampler` (no `set_epoch`) gets its generator re-seeded
    from (seed, epoch), as does the loader's own generator (it draws the worker base seed).
    """
    if prepared is not None and hasattr(prepared, "set_epoch"):
        prepared.set_epoch(epoch)
    sampler = get_sampler(loader)
    reseeded = None
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    elif isinstance(sampler, RandomSampler):
        if sampler.generator is None:
            sampler.generator = torch.Generator()
        sampler.generator.manual_seed(_epoch_seed(seed, epoch))
        reseeded = sampler.generator
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)
    gen = getattr(loader, "generator", None)
    if gen is not None and gen is not reseeded:
        gen.manual_seed(_epoch_seed(seed, epoch, stream=1))


_END = object()  # sentinel: the epoch's iterator is exhausted
_NONE = object()  # sentinel: no batch fetched ahead


def resumable_batches(
    loader: DataLoader, prepared: DataLoader, state: TrainState, *, seed: int, rng_state: dict | None = None
) -> Iterator[Any]:
    """Batches epoch after epoch from the data position in `state`, which it keeps up to date.

    Args:
        loader: the DataLoader as given to `fit`.
        prepared: the loader Accelerate made from it (or `loader` itself).
        state: its `epoch` and `batch_in_epoch` say where to start; both advance as batches are yielded.
        seed: the run's seed (`start_epoch`).
        rng_state: a `capture_rng_state` dict to restore before the first batch is yielded (resume).

    Each epoch's order is a function of (seed, epoch). A mid-epoch resume skips the batches already
    consumed. The iterator is started, and its first batch fetched, *before* the RNG state is
    restored: whatever a loader draws from the global RNG when an iterator starts (the worker base
    seed, when it has no generator) was drawn by the uninterrupted run at the start of the epoch,
    before the checkpoint's RNG state was taken; drawing it after the restore would shift dropout.
    Close the generator when done: it ends the epoch's iterator.

    Raises:
        ValueError: if an epoch yields no batch.
    """
    source, it, pending = prepared, None, _NONE
    try:
        if state.batch_in_epoch > 0:
            start_epoch(loader, state.epoch, seed=seed, prepared=prepared)
            source = skip_first_batches(prepared, state.batch_in_epoch)
            it = iter(source)
            pending = next(it, _END)
        if rng_state is not None:
            restore_rng_state(rng_state)
        while True:
            if pending is not _NONE:
                batch, pending = pending, _NONE
            else:
                if it is None:
                    start_epoch(loader, state.epoch, seed=seed, prepared=prepared)
                    source, it = prepared, iter(prepared)
                batch = next(it, _END)
            if batch is _END:
                if state.batch_in_epoch == 0:
                    raise ValueError("train_loader yielded no batches")
                state.epoch, state.batch_in_epoch, it = state.epoch + 1, 0, None
                continue
            state.batch_in_epoch += 1
            yield batch
    finally:
        if hasattr(it, "close"):
            it.close()
        if hasattr(source, "end"):  # an abandoned Accelerate iterator stays registered otherwise
            source.end()
