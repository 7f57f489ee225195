"""Dry runs: every step of a recipe for real, at its model size, but only a few minutes of it.

In the manner of Lightning's `fast_dev_run` and Hugging Face's `max_*_samples`: a user who sets
`dry_run: true` in a notebook (or runs `vmm run PIPELINE --dry-run`) finds a wrong path, a shape
mismatch or an out-of-memory in minutes, before a 10-hour job. A dry run

- trains `DRY_RUN_STEPS` optimiser steps at the recipe's batch size (warm-up, evaluation and
  checkpointing squeezed into them), and online learning one round;
- runs the model on the first `DRY_RUN_BATCHES` batches of every evaluation and prediction; later
  batches are still read, but their outputs repeat the first batches' rows (shapes and ids kept, so
  every later step runs; the scores mean nothing);
- searches ensemble weights with `DRY_RUN_PROBES` probes; explores `DRY_RUN_ITEMS` videos per split;
- writes into its own folder (`out_dir` + `-dry-run`, unless a folder of its path already says so,
  as a `vmm run --dry-run` run folder does), with `dry_run: true` in `params.yaml` and in
  `metrics.json`, so it is never mistaken for, nor resumed as, a real run.

A notebook calls `apply_dry_run(globals())` right after its parameters cell (before
`notebook_params`). This module imports nothing of vmmlib: `predict` and `runs` consult it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import Any

import numpy as np

DRY_RUN_STEPS = 2  # optimiser steps of a dry run
DRY_RUN_BATCHES = 2  # batches of each evaluation or prediction that run the model
DRY_RUN_PROBES = (2, 1)  # ensemble weight search: random probes, guided probes
DRY_RUN_ITEMS = 200  # videos per split that 00_explore reads
SUFFIX = "-dry-run"  # appended to a dry run's out_dir (or run_dir)

_active = False  # set by `apply_dry_run` (one notebook kernel is one run)


def active() -> bool:
    """Whether this process is executing a dry run (`apply_dry_run` with `dry_run` true)."""
    return _active


def set_active(on: bool) -> None:
    """Switch dry-run mode on or off for this process (tests; notebooks use `apply_dry_run`)."""
    global _active
    _active = bool(on)


def dry_out_dir(out_dir: str) -> str:
    """`out_dir` with `SUFFIX` on its last folder, unless one of its folders already ends with it."""
    parts = str(out_dir).rstrip("/").split("/")
    if any(p.endswith(SUFFIX) for p in parts):
        return str(out_dir)
    return "/".join([*parts[:-1], parts[-1] + SUFFIX])


def dry_run_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters a dry run changes (empty when `params["dry_run"]` is false).

    Reads only the names a notebook declares: `steps`, `eval_every`, `warmup_steps`, `save_every`,
    `predict_options` (`online_epochs`), `max_items_per_split`, `search_init_points`, `search_iter`
    and `out_dir`.
    """
    if not params.get("dry_run"):
        return {}
    changes: dict[str, Any] = {}
    if "steps" in params:
        steps = min(int(params["steps"]), DRY_RUN_STEPS)
        changes["steps"] = steps
        changes["eval_every"] = min(int(params.get("eval_every") or 0), steps)
        changes["warmup_steps"] = min(int(params.get("warmup_steps") or 0), 1)
        if params.get("save_every"):
            changes["save_every"] = steps
    options = params.get("predict_options")
    if isinstance(options, Mapping) and options.get("online_epochs"):
        changes["predict_options"] = {**options, "online_epochs": 1}
    if "max_items_per_split" in params:  # 00_explore: 0 reads every video
        changes["max_items_per_split"] = min(
            int(params["max_items_per_split"]) or DRY_RUN_ITEMS, DRY_RUN_ITEMS
        )
    for name, cap in zip(("search_init_points", "search_iter"), DRY_RUN_PROBES):
        if name in params:
            changes[name] = min(int(params[name]), cap)
    if "out_dir" in params:
        changes["out_dir"] = dry_out_dir(str(params["out_dir"]))
    return {k: v for k, v in changes.items() if params.get(k) != v}


def apply_dry_run(namespace: MutableMapping[str, Any]) -> dict[str, Any]:
    """In a notebook, right after the parameters cell: `apply_dry_run(globals())`.

    With `dry_run` true it overwrites the capped parameters in `namespace` (see `dry_run_params`),
    switches this process into dry-run mode (`active()`) and prints what it changed; with `dry_run`
    false it does nothing.

    Returns:
        The changed parameters, name → new value.
    """
    set_active(bool(namespace.get("dry_run")))
    changes = dry_run_params(namespace)
    if active():
        namespace.update(changes)
        print(
            f"DRY RUN: {DRY_RUN_STEPS} training steps, the model on {DRY_RUN_BATCHES} batches per "
            f"evaluation/prediction (later batches repeat their outputs), {sum(DRY_RUN_PROBES)} ensemble "
            "probes; scores mean nothing. Changed: "
            + (", ".join(f"{k}={v!r}" for k, v in changes.items()) or "nothing")
        )
    return changes


def mark_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """`metrics` with `dry_run: true` first when this process is a dry run (`save_metrics` calls it)."""
    return {"dry_run": True, **metrics} if active() else dict(metrics)


def _batch_len(batch: Any) -> int | None:
    """A batch's item count when its loader cannot say (an iterable dataset): the shortest leading
    length of its tensors (a tensor may hold several rows per item, e.g. every test clip's frames)."""
    values = list(batch.values()) if isinstance(batch, Mapping) else []
    lengths = [int(v.shape[0]) for v in values if hasattr(v, "shape") and len(v.shape)]
    lists = [len(v) for v in values if isinstance(v, (list, tuple))]
    return min(lengths) if lengths else (lists[0] if lists else None)


def capped(
    batches: Iterable[Any], run_batch: Callable[[Any], np.ndarray], sizes: list[int] | None = None
) -> Iterator[tuple[Any, np.ndarray]]:
    """`(batch, run_batch(batch))` for each of `batches`; in dry-run mode only the first
    `DRY_RUN_BATCHES` batches run, each later one gets those outputs' rows repeated to its length
    (`vmmlib.predict.loop.predict_batches` calls it). `sizes`: each batch's item count, as its
    loader's sampler knows it (default: guessed from the batch). Outside dry-run mode every batch runs."""
    seen: list[np.ndarray] = []
    pool: np.ndarray | None = None
    offset = 0
    for i, batch in enumerate(batches):
        n = None
        if active() and len(seen) >= DRY_RUN_BATCHES:
            n = sizes[i] if sizes is not None else _batch_len(batch)
        if n is not None and pool is None:
            try:  # outputs whose trailing shape varies by batch cannot be repeated: those run
                pool = np.concatenate(seen)
            except ValueError:
                n = None
        if n is None or pool is None or not len(pool):
            out = run_batch(batch)
            if active() and len(seen) < DRY_RUN_BATCHES:
                seen.append(out)
            yield batch, out
            continue
        yield batch, pool[(offset + np.arange(n)) % len(pool)]
        offset += n
