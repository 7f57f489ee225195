"""The task contract: every name the five notebooks and the `vmm` command call on a task.

A task module (`vmmlib/tasks/<name>.py`) wires one competition's pieces — reader, sample data,
models, objectives, prediction, metric, submission — and exposes exactly the names of `Task`, as
module-level constants and functions (a recipe interface in the manner of torchtune: a written
Protocol, not a base class). `get_task(name)` returns the module behind this Protocol, with
`DEFAULTS` filling the hooks a task leaves out. `tests/test_task_contract.py` checks every task's
signatures against the ones below, and that the notebooks call nothing else.

Generic pieces are not in the contract; notebooks call them directly: the weights a fold submits
(`vmmlib.runs.submitted_weights`), array files of predictions (`vmmlib.runs.save_arrays` /
`load_arrays`), loading the fold models (`vmmlib.predict.loop.load_fold_models`), the weighting of
objective terms (`vmmlib.objectives.make_objective`) and the submission formats (`vmmlib.submissions`).

Ensembles: a task writes its ensemble once, `combine(predictions, weights, **options)`, the same
function for out-of-fold and test predictions; `vmmlib.ensemble.oof_scorer` scores it (`score_oof`)
for the weight search and `vmmlib.ensemble.write_submission` writes it (`write_predictions`).
`combine` takes the ensemble options, `write_predictions` the writer's (options named apart); the
scorer ignores the writer's, and an option neither takes is refused. `bind` installs the two
generic pieces as the task's `oof_scorer` and `write_submission` (`DERIVED`), and both check the
weight count; rows are aligned by id with `vmmlib.ensemble.align_rows` (`weighted_arrays`).

Types: `Data` is whatever `load` returns (an opened data folder); `Arrays` is a dict of numpy arrays
(out-of-fold or test predictions, saved as `.npz` with their ids); an `Objective` is
`(model, batch) -> {term: raw loss}` and an `EvalFn` is `model -> {metric: value}`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

Arrays = dict[str, np.ndarray]
Data = Any
Objective = Callable[..., dict]
EvalFn = Callable[..., dict]
Scorer = Callable[..., float]


class Task(Protocol):
    """What a competition provides to the notebooks (grouped by the notebook that first calls it)."""

    # --- identity ------------------------------------------------------------------------------
    METRIC: str  # the headline metric (higher is better): the key of fold, out-of-fold and ensemble scores
    PRETRAIN_METRIC: (
        str  # what `pretrain_eval` reports to select the best pretraining checkpoint (higher is better)
    )
    SUBMISSION: str  # the submission format, a name of `vmmlib.submissions.list_formats()`
    BACKBONE_PREFIXES: tuple[str, ...]  # parameter-name prefixes trained at `backbone_lr`
    PRETRAIN_TERMS: tuple[str, ...]  # the terms `objectives` may weight in 10_pretrain
    FINETUNE_TERMS: tuple[str, ...]  # the terms `objectives` may weight in 20_finetune

    # --- 00_explore (and `vmm sample`, `vmm prepare`) ----------------------------------------------
    def make_sample(self, out_dir: Path, **options) -> Path:
        """Write deterministic sample data in the competition's real on-disk layout."""

    def prepare(self, data_dir: Path, **options) -> dict:
        """`vmm prepare TASK DATA_DIR`: convert a data folder's raw files into what `load` reads; a
        JSON-ready summary (default: nothing to prepare, refused)."""

    def explore(self, data_dir: Path, *, max_items_per_split: int = 0, progress: bool = True) -> Any:
        """An `vmmlib.explore.ExploreReport` of a data folder (0 items: read all)."""

    # --- every notebook that trains or predicts -------------------------------------------------
    def load(self, data_dir: Path, *, text_model_dir: str = "") -> Data:
        """Open a data folder; reader options are keyword arguments (`data_options`). A task whose
        models have no text refuses a `text_model_dir`; one that has text tokenises with the
        tokenizer saved in that folder."""

    def build_model(
        self, data: Data, model: str, model_options: Mapping[str, Any], text_model_dir: str
    ) -> Any:
        """A registered model sized to the data; options that the data fixes are refused."""

    # --- 10_pretrain -----------------------------------------------------------------------------
    def pretrain_dataset(self, data: Data) -> Any:
        """The pretraining items (a map-style or iterable torch Dataset)."""

    def pretrain_objective(self, data: Data, terms: tuple[str, ...]) -> Objective:
        """Raw pretraining terms (a subset of `PRETRAIN_TERMS`); options are keyword arguments."""

    def pretrain_eval(self, data: Data) -> EvalFn:
        """Evaluation during pretraining; it reports `PRETRAIN_METRIC`."""

    # --- 20_finetune -----------------------------------------------------------------------------
    def finetune_datasets(self, data: Data, n_folds: int, fold: int) -> tuple[Any, np.ndarray]:
        """(training Dataset, held-out indices) of one fold; fold options are keyword arguments."""

    def finetune_objective(self, data: Data, terms: tuple[str, ...]) -> Objective:
        """Raw fine-tuning terms (a subset of `FINETUNE_TERMS`); options are keyword arguments."""

    def finetune_eval(self, data: Data, val_idx: np.ndarray) -> EvalFn:
        """`METRIC` on a fold's held-out items."""

    def predict_fold(self, model: Any, data: Data, val_idx: np.ndarray, fold: int) -> Arrays:
        """Out-of-fold predictions of a fold's held-out items; prediction options are keywords."""

    def fold_table(self, oof: Arrays, data: Data) -> Any:
        """A DataFrame that explains a fold's (or all folds') out-of-fold predictions."""

    def plot_fold(self, table: Any, title: str = "") -> Any:
        """A figure of `fold_table`."""

    # --- 30_inference ----------------------------------------------------------------------------
    def merge_oof(self, parts: list[Arrays]) -> Arrays:
        """One model's out-of-fold predictions from its folds' parts (default: concatenation)."""

    def oof_scorer(self, oofs: list[Arrays], data: Data, **options) -> Scorer:
        """`score(weights, **searched)` -> out-of-fold `METRIC` of the weighted ensemble of several
        models' out-of-fold predictions (one model: weights [1]). Not written by a task: the default is
        `vmmlib.ensemble.oof_scorer` (`score_oof` of `combine`; the writer's options are ignored)."""

    def oof_breakdown(self, oof: Arrays, data: Data) -> dict[str, float]:
        """Out-of-fold scores besides the headline one (yt8m: per TTA shift); default: none."""

    def predict(self, models: list[Any], data: Data, split: str) -> Arrays:
        """Test predictions of a split by a model's fold models, merged over folds (with "ids")."""

    # --- 40_ensemble -----------------------------------------------------------------------------
    def ensemble_search_space(self, options: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
        """Ensemble options searched besides the model weights, with their bounds (default: none,
        and any option is refused)."""

    def write_submission(
        self, out_dir: Path, predictions: list[Arrays], weights: list[float], **options
    ) -> Path:
        """The weighted ensemble of several models' test predictions, written in the competition's
        format under `out_dir`. Not written by a task: the default is `vmmlib.ensemble.write_submission`
        (`write_predictions` of `combine`, each given its own options)."""

    # --- the ensemble, once per task (used by `oof_scorer` and `write_submission`, not by notebooks) -
    def combine(self, predictions: list[Arrays], weights: list[float]) -> Arrays:
        """The weighted ensemble of several models' predictions (out-of-fold or test, aligned by id) as
        one model's arrays of the same kind; the ensemble options (`ensemble_search_space`'s searched
        ones included) are keyword-only with defaults. The same function is scored and written."""

    def score_oof(self, oof: Arrays, data: Data) -> float:
        """`METRIC` of one model's (or one `combine`d ensemble's) out-of-fold predictions."""

    def write_predictions(self, out_dir: Path, prediction: Arrays) -> Path:
        """One model's (or one `combine`d ensemble's) test predictions written in the competition's
        format under `out_dir`; the writer's options (file layout, ids, ...) are keyword-only
        with defaults, named apart from `combine`'s."""

    def required_ids(self, data: Data, split: str) -> list:
        """What a submission for `split` must cover (video ids, class ids, text ids, ...)."""


def merge_oof(parts: list[Arrays]) -> Arrays:
    """The folds' out-of-fold arrays concatenated key by key (the default `Task.merge_oof`)."""
    keys = list(parts[0])
    if any(list(p) != keys for p in parts):
        raise ValueError("the folds' out-of-fold files hold different arrays: were they made by one task?")
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}


def prepare(data_dir: Path, **options) -> dict:
    """Nothing to prepare (the default `Task.prepare`): the task's `load` reads the folder as it is."""
    raise ValueError(f"this task reads {data_dir} as it is: it has nothing to prepare")


def oof_breakdown(oof: Arrays, data: Data) -> dict[str, float]:
    """No out-of-fold scores besides the headline one (the default `Task.oof_breakdown`)."""
    return {}


def ensemble_search_space(options: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """No ensemble options (the default `Task.ensemble_search_space`)."""
    if options:
        raise ValueError(f"unknown ensemble option(s) {', '.join(options)}; this task takes none")
    return {}


def _oof_scorer(task: Any) -> Callable:
    from vmmlib import ensemble

    def oof_scorer(oofs: list[Arrays], data: Data, **options) -> Scorer:
        return ensemble.oof_scorer(task, oofs, data, **options)

    return oof_scorer


def _write_submission(task: Any) -> Callable:
    from vmmlib import ensemble

    def write_submission(out_dir: Path, predictions: list[Arrays], weights: list[float], **options) -> Path:
        return ensemble.write_submission(task, out_dir, predictions, weights, **options)

    return write_submission


# names built from the task's own (`combine`, `score_oof`, `write_predictions`): made by `bind`
DERIVED: dict[str, Callable[[Any], Callable]] = {
    "oof_scorer": _oof_scorer,
    "write_submission": _write_submission,
}
# names the notebooks never call: the generic pieces in `vmmlib.ensemble` call them
HOOKS = ("combine", "score_oof", "write_predictions")

DEFAULTS: dict[str, Callable] = {
    "prepare": prepare,
    "merge_oof": merge_oof,
    "oof_breakdown": oof_breakdown,
    "ensemble_search_space": ensemble_search_space,
}


def contract_names() -> list[str]:
    """Every name of the contract: constants and functions, in declaration order."""
    names = list(Task.__annotations__)
    names += [n for n, v in vars(Task).items() if callable(v) and not n.startswith("_")]
    return names


def bind(module: ModuleType) -> Task:
    """`module` with `DEFAULTS` filling the hooks it leaves out; a missing required name raises."""
    optional = set(DEFAULTS) | set(DERIVED)
    missing = [n for n in contract_names() if not hasattr(module, n) and n not in optional]
    if missing:
        raise TypeError(
            f"task module {module.__name__} lacks {', '.join(missing)} (see vmmlib.tasks.contract)"
        )
    for name, default in DEFAULTS.items():
        if not hasattr(module, name):
            setattr(module, name, default)
    for name, make in DERIVED.items():
        if not hasattr(module, name):
            setattr(module, name, make(module))
    return module  # type: ignore[return-value]
