"""The task contract: every name the five notebooks and the `vmm` command call on a task, the
options each takes, the attributes an objective may carry and the hooks a model may have.

A task module (`vmmlib/tasks/<name>.py`) wires one competition's pieces — reader, sample data,
models, objectives, prediction, metric, submission — and exposes the names of `Task` as module-level
constants and functions (a recipe interface in the manner of torchtune: a written Protocol, not a
base class). `get_task(name)` returns the module behind this Protocol: `bind` checks the names a task
must write (`required_names()`) and fills the others from `DEFAULT_CONSTANTS`, `DEFAULTS` and
`DERIVED`. `tests/test_task_contract.py` checks every task's signatures against the ones below, and
that the notebooks call nothing else.

The rules, in one place:

- **Identity is data.** `NAME` (the name `get_task` knows it by), `METRIC`, the objective terms; the
  submission format defaults to the competition's own (`SUBMISSION = NAME`).
- **Options are keyword-only with defaults**, beyond the contract's positional parameters. `OPTIONS`
  says which notebook parameter feeds each method's options (`data_options` → `load`, ...); a method
  whose options no parameter feeds keeps them at their defaults (internal knobs such as batch sizes).
  Unknown options fail with the valid list (`vmmlib.options.call_with_options`).
- **Objectives** are `(model, batch) -> {term: raw loss}`, the terms a subset of the task's
  `*_TERMS`; they may carry the attributes of `OBJECTIVE_ATTRIBUTES`, which `vmmlib.objectives` and `fit`
  read. **Models** may define the methods of `MODEL_HOOKS`, which `fit` calls.
- **Ensembles** are written once: `combine(predictions, weights, **options)`, the same function for
  out-of-fold and test predictions; `vmmlib.ensemble.oof_scorer` scores it (`score_oof`) for the
  weight search and `vmmlib.ensemble.write_submission` writes it (`write_predictions`). `combine`
  takes the ensemble options, `write_predictions` the writer's (options named apart); the scorer
  ignores the writer's, and an option neither takes is refused. Rows are aligned by id with
  `vmmlib.ensemble.align_rows` (`weighted_arrays`).

Generic pieces are not in the contract; notebooks call them directly: the weights a fold submits
(`vmmlib.runs.submitted_weights`), array files of predictions (`vmmlib.runs.save_arrays` /
`load_arrays`), loading the fold models (`vmmlib.predict.loop.load_fold_models`), the weighting of
objective terms (`vmmlib.objectives.make_objective`) and the submission formats (`vmmlib.submissions`).

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
    """What a competition provides to the notebooks (grouped by the notebook that first calls it).
    Names marked *optional* have a default (`DEFAULT_CONSTANTS`, `DEFAULTS`, `DERIVED`)."""

    # --- identity (data) -------------------------------------------------------------------------
    NAME: str  # the task's name in `vmmlib.tasks.list_tasks()`
    METRIC: str  # the headline metric (higher is better): the key of fold, out-of-fold and ensemble scores
    PRETRAIN_TERMS: tuple[str, ...]  # the terms `objectives` may weight in 10_pretrain
    FINETUNE_TERMS: tuple[str, ...]  # the terms `objectives` may weight in 20_finetune
    SUBMISSION: str  # optional (NAME): the submission format, a name of `vmmlib.submissions.list_formats()`
    PRETRAIN_METRIC: str  # optional (METRIC): what `pretrain_eval` reports to keep the best checkpoint
    BACKBONE_PREFIXES: tuple[str, ...]  # optional (none): parameter-name prefixes trained at `backbone_lr`

    # --- 00_explore (and `vmm sample`, `vmm prepare`) ----------------------------------------------
    def make_sample(self, out_dir: Path, **options) -> Path:
        """Optional: write deterministic sample data in the competition's real on-disk layout (default:
        `vmmlib.data.write_sample(NAME, ...)`)."""

    def prepare(self, data_dir: Path, **options) -> dict:
        """`vmm prepare TASK DATA_DIR`: convert a data folder's raw files into what `load` reads; a
        JSON-ready summary (default: nothing to prepare, refused)."""

    def explore(self, data_dir: Path, *, max_items_per_split: int = 0, progress: bool = True) -> Any:
        """Optional: a `vmmlib.explore.ExploreReport` of a data folder (0 items: read all); the default
        is the shared skeleton `vmmlib.explore.explore` over `summarize`."""

    def summarize(self, data_dir: Path) -> Any:
        """What the explore skeleton reads of a data folder: a `vmmlib.explore.Summary` (its splits,
        a row per item, the label / category / target summaries)."""

    # --- every notebook that trains or predicts -------------------------------------------------
    def load(self, data_dir: Path, *, text_model_dir: str = "") -> Data:
        """Open a data folder; reader options are keyword arguments (`data_options`). A task whose
        models have no text refuses a `text_model_dir`; one that has text tokenises with the
        tokenizer saved in that folder."""

    def build_model(
        self, data: Data, model: str, model_options: Mapping[str, Any], text_model_dir: str
    ) -> Any:
        """Optional: a registered model sized to the data; options that the data fixes are refused
        (default `build_model` below: `data.model_overrides(text_model_dir)` says what it fixes)."""

    # --- 10_pretrain -----------------------------------------------------------------------------
    def pretrain_dataset(self, data: Data) -> Any:
        """The pretraining items (a map-style or iterable torch Dataset)."""

    def pretrain_objective(self, data: Data, terms: tuple[str, ...]) -> Objective:
        """Raw pretraining terms (a subset of `PRETRAIN_TERMS`)."""

    def pretrain_eval(self, data: Data) -> EvalFn:
        """Evaluation during pretraining; it reports `PRETRAIN_METRIC`."""

    # --- 20_finetune -----------------------------------------------------------------------------
    def finetune_datasets(self, data: Data, n_folds: int, fold: int) -> tuple[Any, np.ndarray]:
        """(training Dataset, held-out indices) of one fold."""

    def finetune_objective(self, data: Data, terms: tuple[str, ...]) -> Objective:
        """Raw fine-tuning terms (a subset of `FINETUNE_TERMS`)."""

    def finetune_eval(self, data: Data, val_idx: np.ndarray) -> EvalFn:
        """`METRIC` on a fold's held-out items."""

    def predict_fold(self, model: Any, data: Data, val_idx: np.ndarray, fold: int) -> Arrays:
        """Out-of-fold predictions of a fold's held-out items."""

    def fold_table(self, oof: Arrays, data: Data) -> Any:
        """Optional: a DataFrame that explains a fold's (or all folds') out-of-fold predictions
        (default: one row, `METRIC` and `oof_breakdown`)."""

    def plot_fold(self, table: Any, title: str = "") -> Any:
        """Optional: a figure of `fold_table` (default: bars of its numeric columns)."""

    # --- 30_inference ----------------------------------------------------------------------------
    def merge_oof(self, parts: list[Arrays]) -> Arrays:
        """Optional: one model's out-of-fold predictions from its folds' parts (default: concatenation)."""

    def oof_scorer(self, oofs: list[Arrays], data: Data, **options) -> Scorer:
        """`score(weights, **searched)` -> out-of-fold `METRIC` of the weighted ensemble of several
        models' out-of-fold predictions (one model: weights [1]). Not written by a task: the default is
        `vmmlib.ensemble.oof_scorer` (`score_oof` of `combine`; the writer's options are ignored)."""

    def oof_breakdown(self, oof: Arrays, data: Data) -> dict[str, float]:
        """Optional: out-of-fold scores besides the headline one (yt8m: per TTA shift); default: none."""

    def predict(self, models: list[Any], data: Data, split: str) -> Arrays:
        """Test predictions of a split by a model's fold models, merged over folds (with "ids")."""

    # --- 40_ensemble -----------------------------------------------------------------------------
    def ensemble_search_space(self, options: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
        """Optional: ensemble options searched besides the model weights, with their bounds (default:
        none; an option that neither `combine` nor `write_predictions` takes is refused)."""

    def write_submission(
        self, out_dir: Path, predictions: list[Arrays], weights: list[float], **options
    ) -> Path:
        """The weighted ensemble of several models' test predictions, written in the competition's
        format under `out_dir`. Not written by a task: the default is `vmmlib.ensemble.write_submission`
        (`write_predictions` of `combine`, each given its own options)."""

    # --- the ensemble, once per task (used by `oof_scorer` and `write_submission`, not by notebooks) -
    def combine(self, predictions: list[Arrays], weights: list[float]) -> Arrays:
        """The weighted ensemble of several models' predictions (out-of-fold or test, aligned by id) as
        one model's arrays of the same kind. The same function is scored and written."""

    def score_oof(self, oof: Arrays, data: Data) -> float:
        """`METRIC` of one model's (or one `combine`d ensemble's) out-of-fold predictions."""

    def write_predictions(self, out_dir: Path, prediction: Arrays) -> Path:
        """One model's (or one `combine`d ensemble's) test predictions written in the competition's
        format under `out_dir`."""

    def required_ids(self, data: Data, split: str) -> list:
        """What a submission for `split` must cover (video ids, class ids, text ids, ...)."""


# Which notebook parameter feeds each method's keyword options (keyword-only, with defaults). A
# method not listed takes none from the notebooks: any keywords it has stay at their defaults.
OPTIONS: dict[str, str] = {
    "make_sample": "the options of `vmm sample TASK DIR --option k=v` (the sample writer's)",
    "prepare": "the options of `vmm prepare TASK DIR` (--splits, --check, --workers, ...)",
    "load": "data_options (reader options; text_model_dir is the notebooks' own parameter)",
    "pretrain_objective": "objective_options (10_pretrain)",
    "finetune_datasets": "fold_options (the fold scheme, its seed)",
    "finetune_objective": "objective_options (20_finetune)",
    "predict_fold": "predict_options (20_finetune: the out-of-fold predictions)",
    "predict": "predict_options (30_inference: the test predictions)",
    "combine": "ensemble_options (the ensemble's, `ensemble_search_space`'s searched ones included)",
    "write_predictions": "ensemble_options (the writer's: file layout, ids, ...; named apart from combine's)",
}

# Attributes an objective may carry; `vmmlib.objectives.weighted` and `fit` read them (absent: the default).
OBJECTIVE_ATTRIBUTES: dict[str, str] = {
    "backward_inside": "bool (False): called as objective(model, batch, backward=fn), it runs its own "
    "backward passes and returns one weighted term (e.g. contrastive accumulation over cached features)",
    "shares_weight": "{part: term} ({}): a part logged apart and weighted like that term "
    "(qqbrowser's branch_tag takes the tag weight)",
    "summed_terms": "tuple of terms (()): summed over the batch's items, not averaged, so fit's gradient "
    "accumulation weighs each micro-batch 1",
    "count_items": "batch -> int (the batch size): the items a micro-batch counts in the accumulation's mean",
}

# Methods a model may define; `fit` (and online learning) calls them when present.
MODEL_HOOKS: dict[str, str] = {
    "after_optimizer_step": "() -> None, after every optimiser step taken, before the EMA update "
    "(Chinese-CLIP's logit-scale clamp)",
}


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


def build_model(data: Data, model: str, model_options: Mapping[str, Any], text_model_dir: str):
    """A registered model sized to the data (the default `Task.build_model`): `data.model_overrides(
    text_model_dir)` gives the sizes the data fixes (refused in `model_options`, as is `text_model_dir`);
    a `text_model_dir` is passed to the model, which loads its local pretrained text backbone."""
    from vmmlib.models import create_model

    options, sized = dict(model_options or {}), data.model_overrides(text_model_dir)
    fixed = sorted(set(options) & {*sized, "text_model_dir"})
    if fixed:
        raise ValueError(
            f"model option(s) {', '.join(fixed)} {'comes' if len(fixed) == 1 else 'come'} from the data "
            "or the text_model_dir parameter; leave them out of model_options"
        )
    if text_model_dir:
        options["text_model_dir"] = str(text_model_dir)
    return create_model(model, **options, **sized)


def plot_fold(table: Any, title: str = ""):
    """Bars of the fold table's numeric columns, one group per row (the default `Task.plot_fold`)."""
    from vmmlib.plots import plot_table_bars

    return plot_table_bars(table, title=title)


def _make_sample(task: Any) -> Callable:
    from vmmlib.data import write_sample

    def make_sample(out_dir: Path, **options) -> Path:
        return write_sample(task.NAME, out_dir, **options)

    return make_sample


def _explore(task: Any) -> Callable:
    from vmmlib.explore import explore as skeleton

    def explore(data_dir: Path, *, max_items_per_split: int = 0, progress: bool = True):
        return skeleton(task.summarize, data_dir, max_items_per_split=max_items_per_split, progress=progress)

    return explore


def _fold_table(task: Any) -> Callable:
    def fold_table(oof: Arrays, data: Data):
        import pandas as pd

        return pd.DataFrame([{task.METRIC: task.score_oof(oof, data), **task.oof_breakdown(oof, data)}])

    return fold_table


def _ensemble_search_space(task: Any) -> Callable:
    from vmmlib import ensemble

    def ensemble_search_space(options: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
        ensemble.split_options(task, options)  # an option neither `combine` nor the writer takes fails
        return {}

    return ensemble_search_space


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


# optional constants: name -> the default, computed from the task's own constants
DEFAULT_CONSTANTS: dict[str, Callable[[Any], Any]] = {
    "SUBMISSION": lambda task: task.NAME,
    "PRETRAIN_METRIC": lambda task: task.METRIC,
    "BACKBONE_PREFIXES": lambda task: (),
}
# optional functions that need nothing of the task
DEFAULTS: dict[str, Callable] = {
    "prepare": prepare,
    "build_model": build_model,
    "plot_fold": plot_fold,
    "merge_oof": merge_oof,
    "oof_breakdown": oof_breakdown,
}
# optional functions built from the task's own names
DERIVED: dict[str, Callable[[Any], Callable]] = {
    "make_sample": _make_sample,
    "explore": _explore,
    "fold_table": _fold_table,
    "ensemble_search_space": _ensemble_search_space,
    "oof_scorer": _oof_scorer,
    "write_submission": _write_submission,
}
# names the notebooks never call: the library calls them (`bind`'s defaults, the explore skeleton,
# `vmmlib.ensemble`)
HOOKS = ("NAME", "summarize", "combine", "score_oof", "write_predictions")


def contract_names() -> list[str]:
    """Every name of the contract: constants and functions, in declaration order."""
    names = list(Task.__annotations__)
    names += [n for n, v in vars(Task).items() if callable(v) and not n.startswith("_")]
    return names


def required_names() -> list[str]:
    """The names a task must write (the others have defaults)."""
    optional = set(DEFAULT_CONSTANTS) | set(DEFAULTS) | set(DERIVED)
    return [n for n in contract_names() if n not in optional]


def bind(module: ModuleType) -> Task:
    """`module` with the defaults filling the names it leaves out; a missing required name raises."""
    missing = [n for n in required_names() if not hasattr(module, n)]
    if missing:
        raise TypeError(
            f"task module {module.__name__} lacks {', '.join(missing)} (see vmmlib.tasks.contract)"
        )
    for name, default in DEFAULT_CONSTANTS.items():
        if not hasattr(module, name):
            setattr(module, name, default(module))
    for name, default in DEFAULTS.items():
        if not hasattr(module, name):
            setattr(module, name, default)
    for name, make in DERIVED.items():
        if not hasattr(module, name):
            setattr(module, name, make(module))
    return module  # type: ignore[return-value]
