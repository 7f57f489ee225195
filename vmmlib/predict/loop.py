"""The one prediction loop every task uses, and loading a model's fold checkpoints.

`predict_batches` runs one or more models over a dataset in eval mode (restored afterwards), on the
accelerator's device (a GPU when there is one), under bf16 autocast on GPU, with a progress bar, and
yields each batch with the mean of the models' outputs as float32 numpy. `load_fold_models` builds
each fold's model from its run folder's `params.yaml` and loads the weights the fold submits
(`vmmlib.runs.submitted_weights`).

Several processes (`vmmlib.train.launch`, `accelerate launch`, `torchrun`): `predict_batches` shares the
batches out (batch k runs in process k mod W) and gathers the outputs after each round of W batches
(`accelerate.utils.gather_object`, in batch order, no batch twice), so every process gets every
batch's outputs and an evaluation's metric is the whole validation set's, computed once per process
on the same numbers. Every process must then call it (as `fit` calls `eval_fn`: on every process).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from vmmlib import dryrun
from vmmlib.progress import progress as progress_bar
from vmmlib.runs import read_yaml, submitted_weights

Step = Callable[[nn.Module, dict], torch.Tensor]


def default_device() -> torch.device:
    """The device Accelerate would train on in this process (a GPU when present, else the CPU)."""
    from accelerate import PartialState

    return PartialState().device


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.no_grad()
def predict_batches(
    models: nn.Module | Sequence[nn.Module],
    data: Dataset | DataLoader,
    step: Step,
    *,
    batch_size: int = 64,
    collate_fn: Callable | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    desc: str = "predicting",
) -> Iterator[tuple[dict, np.ndarray]]:
    """Yield (batch, float32 outputs) per batch: the mean over `models` of `step(model, batch)`.

    Args:
        models: one model or several (e.g. a model's fold models), moved to `device`.
        data: a Dataset (batched here, in order) or a ready DataLoader.
        step: (model, batch on the device) -> (B, ...) tensor, e.g. `lambda m, b: m(**b)["embedding"]`.
        device: default: `default_device()`.
    """
    models = [models] if isinstance(models, nn.Module) else list(models)
    device = torch.device(device) if device is not None else default_device()
    loader = data if isinstance(data, DataLoader) else DataLoader(
        data, batch_size=batch_size, shuffle=False, collate_fn=collate_fn
    )  # fmt: skip
    states = [m.training for m in models]
    for m in models:
        m.to(device).eval()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()

    def run(batch: dict) -> np.ndarray:
        inputs = _to(batch, device)
        total: Any = 0
        with autocast:
            for m in models:
                total = total + step(m, inputs).float().cpu().numpy()
        return (total / len(models)).astype(np.float32, copy=False)

    batches = progress_bar(loader, desc=desc, disable=not progress, leave=False, unit="batch")
    rank, world = _process_group()
    try:  # a dry run (`vmmlib.dryrun`) runs the models on the first batches only (in one process)
        if world > 1:
            yield from _shared(batches, run, rank, world)
        else:
            yield from dryrun.capped(batches, run, _batch_sizes(loader) if dryrun.active() else None)
    finally:
        for m, state in zip(models, states):
            m.train(state)


def _batch_sizes(loader: DataLoader) -> list[int] | None:
    """Each batch's item count from the loader's sampler (None for an iterable dataset)."""
    if isinstance(loader.dataset, IterableDataset) or loader.batch_sampler is None:
        return None
    return [len(indices) for indices in loader.batch_sampler]


def _process_group() -> tuple[int, int]:
    """(rank, world size) of torch.distributed; (0, 1) when no process group is up."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _shared(batches: Iterable[Any], run: Callable[[Any], np.ndarray], rank: int, world: int):
    """(batch, outputs) of every batch, in order, each batch run by one process: rounds of `world`
    batches, process r runs the round's r-th, the outputs gathered (one collective per round)."""
    from accelerate.utils import gather_object

    it = iter(batches)
    while True:
        round_ = list(itertools.islice(it, world))  # every process iterates the same batches
        if not round_:
            return
        mine = [run(round_[rank]) if rank < len(round_) else None]
        outputs = gather_object(mine)  # (world,) in rank order = the round's batch order
        yield from zip(round_, outputs)


def predict_all(models, data, step: Step, *, id_key: str = "id", **options) -> tuple[list[str], np.ndarray]:
    """(ids, outputs) of every item of `data`: `predict_batches` gathered into one array."""
    ids: list[str] = []
    chunks: list[np.ndarray] = []
    for batch, out in predict_batches(models, data, step, **options):
        ids += list(batch[id_key])
        chunks.append(out)
    return ids, np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def load_fold_models(fold_dirs: Sequence[str | Path], task, data, *, device=None) -> list[nn.Module]:
    """Each fold's model, as its `params.yaml` describes it, with the weights the fold submits.

    Args:
        task: the task (`vmmlib.tasks.get_task`), whose `build_model` sizes the model to `data`.
    """
    from vmmlib.train.checkpoint import load_weights

    device = torch.device(device) if device is not None else default_device()
    models = []
    for folder in fold_dirs:
        params = read_yaml(Path(folder) / "params.yaml")
        model = task.build_model(
            data, params["model"], params.get("model_options") or {}, params.get("text_model_dir") or ""
        )
        load_weights(model, submitted_weights(folder))
        models.append(model.to(device).eval())
    return models


def fold_dirs(patterns: Sequence[str]) -> list[Path]:
    """The fine-tuning run folders matching glob `patterns` (relative to the project root), sorted.
    Only folders: a file beside them that matches too (`finetune-fold0.ipynb`) is not a run.

    Raises:
        FileNotFoundError: no folder matches.
    """
    import glob

    from vmmlib.runs import resolve_path

    matches = {resolve_path(p) for pattern in patterns for p in glob.glob(str(resolve_path(pattern)))}
    found = sorted(p for p in matches if p.is_dir())
    if not found:
        raise FileNotFoundError(f"no fine-tuning run folders match finetune_dirs {list(patterns)}")
    return found


def fold_setting(folds: Sequence[str | Path], name: str) -> Any:
    """The parameter `name` of a model's fold runs, which must agree (e.g. `data_options`).

    Raises:
        ValueError: two folds were run with different values (naming both folders).
    """
    values = {Path(f): read_yaml(Path(f) / "params.yaml").get(name) for f in folds}
    first_folder, first = next(iter(values.items()))
    for folder, value in values.items():
        if value != first:
            raise ValueError(f"{name} differs between {first_folder} ({first!r}) and {folder} ({value!r})")
    return {} if first is None and name.endswith("_options") else ("" if first is None else first)


def tensors(batch: dict) -> dict:
    """The tensor entries of a batch (what a model's forward takes; ids and texts stay behind)."""
    return {k: v for k, v in batch.items() if torch.is_tensor(v)}
