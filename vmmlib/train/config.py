"""`fit`'s options, written once: `FitConfig`, and what is derived from it.

Every option of `fit` is one field of `FitConfig`: its type, default, one line of doc, its check and
its rules (metadata). Derived from the fields, never spelled again:

- `fit`'s keyword signature (`fit_signature`) and `check_fit_args`, the check `fit` runs first, public
  so a notebook can run it before loading any data (a bad `steps`, `lr` or `schedule` then fails in
  seconds, not after a cache build);
- `result_args`: the options that change the trained weights ("record"), with "off" spelled one way;
  a checkpoint stores them and `fit` refuses to resume one made with others;
- `OPTIMIZER_ARGS` (what a resume with `reset_optimizer` may change) and `optimizer_args` (what
  `vmmlib.train.optim.make_optimizer` takes);
- `fit_params(params)`: the notebook parameters that are `fit` options, passed on as they are.

Adding an option is one field here (plus the code that uses it). Off is 0: every optional number
means "off / the default" at 0, and None is accepted the same way.

Also here: `sum_terms` (the check of an objective's output and its sum), `check_same_run`,
`resolve_mixed_precision`.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import numbers
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vmmlib.train.adversarial import ADVERSARIAL
from vmmlib.train.optim import SCHEDULES

__all__ = [
    "OPTIMIZER_ARGS",
    "PRECISIONS",
    "FitConfig",
    "check_fit_args",
    "check_same_run",
    "fit_params",
    "fit_signature",
    "optimizer_args",
    "resolve_mixed_precision",
    "result_args",
    "sum_terms",
]

PRECISIONS = ("auto", "no", "bf16")
Check = tuple[Callable[[Any], bool], str]  # (test, what is valid)


def _integer(low: int, optional: bool = True) -> Check:
    def ok(v: Any) -> bool:
        return (optional and v is None) or (
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= low
        )

    what = f"an integer >= {low}"
    return ok, what


def _number(test: Callable[[float], bool], what: str, optional: bool = True) -> Check:
    def ok(v: Any) -> bool:
        real = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
        return (optional and v is None) or (real and test(v))

    return ok, what


def _choice(choices: tuple[str, ...], optional: bool = False) -> Check:
    return (lambda v: (optional and v is None) or v in choices), f"one of {', '.join(choices)}"


def _regex(v: Any) -> bool:
    if not isinstance(v, str) or not v:
        return False
    try:
        re.compile(v)
    except re.error:
        return False
    return True


def _with(check: Check, note: str) -> Check:
    return check[0], f"{check[1]}; {note}"


def _opt(
    default: Any,
    doc: str,
    check: Check | None = None,
    *,
    record: bool | Callable[[Mapping[str, Any]], bool] = False,
    off_zero: bool = False,
    optimizer: bool = False,
    resettable: bool = False,
    notebook: bool = True,
) -> Any:
    """One option of `fit`.

    Args:
        default: its default (`dataclasses.MISSING`: required).
        doc: one line.
        check: (test, what is valid) that `check_fit_args` applies, or None.
        record: whether `result_args` records it (a function of all options: only when a trick is on).
        off_zero: recorded with "off" (None) spelled 0.
        optimizer: an argument of `vmmlib.train.optim.make_optimizer`.
        resettable: a setting of the optimiser that a resume with `reset_optimizer` may change.
        notebook: `fit_params` takes it from a notebook's parameters of the same name.
    """
    meta = {"doc": doc, "check": check, "record": record, "off_zero": off_zero, "optimizer": optimizer}
    meta.update(resettable=resettable, notebook=notebook)
    return field(default=default, metadata=meta)


def _adversarial_on(a: Mapping[str, Any]) -> bool:
    return a.get("adversarial") not in (None, "", "none")


_MISSING = dataclasses.MISSING
_GE0 = _integer(0)


@dataclass
class FitConfig:
    """Every option of `vmmlib.train.loop.fit` (pass them as keywords to `fit`, or a `FitConfig`)."""

    # -- the run
    steps: int = _opt(_MISSING, "optimiser steps in total, counting those done before a resume",
                      _integer(1, optional=False), optimizer=True)  # fmt: skip
    lr: float = _opt(_MISSING, "peak learning rate of the non-backbone groups",
                     _number(lambda v: v > 0, "a number > 0", optional=False),
                     record=True, optimizer=True, resettable=True)  # fmt: skip
    out_dir: str | Path = _opt(_MISSING, "run folder for checkpoints, history.csv and model.safetensors",
                               notebook=False)  # fmt: skip
    # -- optimiser and schedule (vmmlib.train.optim)
    backbone_lr: float | None = _opt(None, "peak lr of the parameters named with backbone_prefixes (0: lr)",
                                     _number(lambda v: v >= 0, "a number >= 0; 0: lr"), record=True,
                                     off_zero=True, optimizer=True, resettable=True)  # fmt: skip
    backbone_prefixes: tuple[str, ...] = _opt(("text.",), "name prefixes of backbone parameters, e.g. ('text.',)",
                                              record=True, optimizer=True, notebook=False)  # fmt: skip
    weight_decay: float = _opt(0.01, "AdamW decoupled weight decay; 0 for parameters with fewer than 2 dims",
                               _number(lambda v: v >= 0, "a number >= 0", optional=False),
                               record=True, optimizer=True, resettable=True)  # fmt: skip
    warmup_steps: int = _opt(0, "linear warmup steps of the non-backbone groups", _integer(0, optional=False),
                             record=True, optimizer=True, resettable=True)  # fmt: skip
    backbone_warmup_steps: int | None = _opt(None, "warmup of the backbone groups (None: warmup_steps; 0: none)",
                                             _with(_GE0, "or None: warmup_steps"), record=True,
                                             optimizer=True, resettable=True)  # fmt: skip
    schedule: str = _opt("linear", "decay after warmup: one of vmmlib.train.optim.SCHEDULES", _choice(SCHEDULES),
                         record=True, optimizer=True, resettable=True)  # fmt: skip
    schedule_steps: int | None = _opt(0, "horizon of the decay (0: steps); the interval of 'exponential'",
                                      _with(_GE0, "0: steps"), record=True, off_zero=True,
                                      optimizer=True, resettable=True)  # fmt: skip
    decay_rate: float = _opt(0.9, "factor per schedule_steps of the 'exponential' schedule",
                             _number(lambda v: 0 < v <= 1, "a number in (0, 1]", optional=False),
                             record=True, optimizer=True, resettable=True)  # fmt: skip
    adam_eps: float = _opt(1e-8, "AdamW epsilon (WBDC rank-8 uses 1e-6)",
                           _number(lambda v: v > 0, "a number > 0", optional=False),
                           record=True, optimizer=True, resettable=True)  # fmt: skip
    layer_lr_decay: float | None = _opt(0.0, "layer-wise lr decay in (0, 1] (0: off): rate × decay**depth",
                                        _number(lambda v: 0 <= v <= 1, "a number in (0, 1]; 0: off"),
                                        record=lambda a: bool(a.get("layer_lr_decay")),
                                        optimizer=True, resettable=True)  # fmt: skip
    grad_clip: float | None = _opt(1.0, "max global grad norm (0: no clipping; the norm is still logged)",
                                   _number(lambda v: v >= 0, "a number >= 0; 0: no clipping"),
                                   record=True, off_zero=True)  # fmt: skip
    grad_accum_steps: int = _opt(1, "micro-batches per optimiser step, as one batch this many times larger",
                                 _integer(1, optional=False),
                                 record=lambda a: (a.get("grad_accum_steps") or 1) > 1)  # fmt: skip
    # -- weight averaging and adversarial training
    ema_decay: float | None = _opt(0.0, "keep an EMA of the weights with this decay (0: off)",
                                   _number(lambda v: 0 <= v < 1, "a number in [0, 1); 0: off"),
                                   record=True, off_zero=True)  # fmt: skip
    adversarial: str | None = _opt("none", "'none', 'fgm' or 'pgd' on the parameters matching adv_param_pattern",
                                   _choice(ADVERSARIAL, optional=True), record=_adversarial_on)  # fmt: skip
    adv_epsilon: float = _opt(1.0, "FGM's step / PGD's L2 ball radius",
                              _number(lambda v: v > 0, "a number > 0", optional=False),
                              record=_adversarial_on)  # fmt: skip
    adv_alpha: float = _opt(0.3, "PGD's step", _number(lambda v: v > 0, "a number > 0", optional=False),
                            record=lambda a: a.get("adversarial") == "pgd")  # fmt: skip
    adv_steps: int = _opt(3, "PGD's number of steps K", _integer(1, optional=False),
                          record=lambda a: a.get("adversarial") == "pgd")  # fmt: skip
    adv_param_pattern: str = _opt("word_embeddings", "regex searched in parameter names (the word embeddings)",
                                  (_regex, "a non-empty regular expression"), record=_adversarial_on)  # fmt: skip
    swa_last: int | None = _opt(0, "final model = mean of the last this many snapshots (0: off)",
                                _with(_GE0, "0: off"), record=lambda a: bool(a.get("swa_last")))  # fmt: skip
    swa_every: int | None = _opt(0, "an SWA snapshot every this many steps (0: every eval_every steps)",
                                 _with(_GE0, "0: eval_every"), record=lambda a: bool(a.get("swa_last")))  # fmt: skip
    # -- evaluation and the best checkpoint
    eval_fn: Callable[[Any], Mapping[str, float]] | None = _opt(None, "eval_fn(model) -> {name: float}",
                                                                notebook=False)  # fmt: skip
    eval_every: int | None = _opt(0, "evaluate every this many steps (0: only at the end)",
                                  _with(_GE0, "0: at the end only"))  # fmt: skip
    metric: str | None = _opt(None, "key of eval_fn's dict that selects checkpoints/best (None: no best)",
                              record=True, notebook=False)  # fmt: skip
    greater_is_better: bool = _opt(True, "direction of metric", record=True, notebook=False)
    # -- checkpoints, resume, logging
    save_every: int | None = _opt(0, "write checkpoints/last every this many steps (0: off; always at the end)",
                                  _with(_GE0, "0: off"))  # fmt: skip
    save_minutes: float | None = _opt(0.0, "also write it when this many minutes passed (0: off)",
                                      _number(lambda v: v >= 0, "a number >= 0; 0: off"))  # fmt: skip
    resume: bool = _opt(
        True, "continue from out_dir/checkpoints/last; False deletes what an earlier fit wrote"
    )
    reset_optimizer: bool = _opt(False, "on a resume, fresh AdamW moments; OPTIMIZER_ARGS may then differ")
    fingerprint: str | None = _opt(None, "what made this run beyond fit's options (a parameters' hash)",
                                   notebook=False)  # fmt: skip
    max_nonfinite_steps: int | None = _opt(5, "raise after this many consecutive skipped steps (0: never)",
                                           _with(_GE0, "0: never give up"))  # fmt: skip
    mixed_precision: str = _opt("auto", "'auto' (bf16 on a bf16-capable GPU, else 'no'), 'no' or 'bf16'",
                                _choice(PRECISIONS), record=True)  # fmt: skip
    seed: int = _opt(0, "seeds python/numpy/torch (+ process index) and the samplers per epoch")
    log_every: int | None = _opt(10, "a history row (and the one device-to-host read) every this many steps",
                                 _with(_GE0, "0: at the end only"))  # fmt: skip
    progress: bool = _opt(True, "show a tqdm progress bar (main process only)")
    accelerator: Any = _opt(
        None, "an existing accelerate.Accelerator (e.g. in notebook_launcher)", notebook=False
    )

    def as_dict(self) -> dict[str, Any]:
        """The options by name (no deep copy: eval_fn and accelerator stay the same objects)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def make(cls, config: FitConfig | None = None, **options: Any) -> FitConfig:
        """`config` with `options` replacing its fields (or a new one); unknown names raise TypeError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise TypeError(f"unknown fit option(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
        return dataclasses.replace(config, **options) if config is not None else cls(**options)


_FIELDS = {f.name: f for f in dataclasses.fields(FitConfig)}
# the optimiser's own settings: a resume with `reset_optimizer` may change them
OPTIMIZER_ARGS = tuple(n for n, f in _FIELDS.items() if f.metadata["resettable"])


def fit_signature(leading: list[inspect.Parameter]) -> inspect.Signature:
    """`fit`'s signature: `leading` (model, loader, objective) and every `FitConfig` field as a keyword."""
    options = [
        inspect.Parameter(
            n,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=f.type,
            default=inspect.Parameter.empty if f.default is _MISSING else f.default,
        )  # fmt: skip
        for n, f in _FIELDS.items()
    ]
    return inspect.Signature([*leading, *options])


def check_fit_args(*, batch_size: int | None = None, **options: Any) -> None:
    """Check `fit`'s options (`FitConfig`'s names, meanings and defaults), any subset of them.

    `batch_size` is not `fit`'s (the loader has it) but is checked here too for notebooks.

    Raises:
        ValueError: naming every invalid or unknown option with its valid range or choices.
    """
    unknown = sorted(set(options) - set(_FIELDS))
    if unknown:
        raise ValueError(
            f"unknown fit option(s) {', '.join(unknown)}; valid fit options: {', '.join(_FIELDS)}"
        )
    values = {n: options.get(n, f.default) for n, f in _FIELDS.items()}
    problems = [] if _integer(1)[0](batch_size) else [f"batch_size={batch_size!r} (an integer >= 1)"]
    for name, f in _FIELDS.items():
        check, value = f.metadata["check"], values[name]
        if value is _MISSING:
            if name in ("steps", "lr"):
                problems.append(f"{name} is required")
        elif check is not None and not check[0](value):
            problems.append(f"{name}={value!r} ({check[1]})")
    swa_last, every = values["swa_last"], values["swa_every"] or values["eval_every"]
    if _integer(2, optional=False)[0](swa_last) and not every:
        problems.append(
            f"swa_last={swa_last!r} needs eval_every >= 1 or swa_every >= 1 (SWA averages a snapshot every "
            "swa_every steps, or eval_every, and the final weights; with both 0 there is only the final one)"
        )
    if problems:
        raise ValueError("invalid fit argument(s): " + "; ".join(problems))


def result_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """The options of `fit` that shape the trained weights ("record" in `FitConfig`), "off" spelled
    0 (JSON values).

    `steps` is left out (a run may be extended on purpose), and so are the eval/save/log periods
    (but the SWA cadence with SWA: it chooses the averaged weights). `metric` and `greater_is_better`
    are in: they choose the best checkpoint. A trick's options are recorded only when it is on, so
    a checkpoint written before the trick existed still resumes with it off.
    """
    out = {}
    for name, f in _FIELDS.items():
        record = f.metadata["record"]
        if record is True or (callable(record) and record(args)):
            out[name] = (args[name] or 0) if f.metadata["off_zero"] else args[name]
    out["mixed_precision"] = resolve_mixed_precision(args["mixed_precision"])
    if "swa_every" in out:
        out["swa_every"] = args["swa_every"] or args["eval_every"] or 0
    return json.loads(json.dumps(out))


def optimizer_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """The options `vmmlib.train.optim.make_optimizer` takes."""
    return {n: args[n] for n, f in _FIELDS.items() if f.metadata["optimizer"]}


def fit_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The notebook parameters that are `fit` options (same names), to pass on as they are."""
    return {n: params[n] for n, f in _FIELDS.items() if f.metadata["notebook"] and n in params}


def resolve_mixed_precision(mixed_precision: str) -> str:
    """ "auto" → "bf16" on a bf16-capable GPU, else "no"; "no" and "bf16" stay."""
    if mixed_precision == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return mixed_precision


def check_same_run(
    last_dir: Any,
    saved: Any,
    fingerprint: str | None,
    fit_args: dict[str, Any],
    reset_optimizer: bool = False,
) -> None:
    """Raise ValueError when the checkpoint in `last_dir` (its `TrainState` `saved`) was made with
    another fingerprint or other result-shaping arguments (`result_args`; with `reset_optimizer`,
    less `OPTIMIZER_ARGS`) than this run's."""
    ignore = OPTIMIZER_ARGS if reset_optimizer else ()
    differ = []
    if saved.fit_args is not None:  # checkpoints written before fit recorded its arguments have none
        keys = list(fit_args) + [k for k in saved.fit_args if k not in fit_args]
        differ = [
            f"{k}: {saved.fit_args.get(k)!r} → {fit_args.get(k)!r}"
            for k in keys
            if k not in ignore and saved.fit_args.get(k) != fit_args.get(k)
        ]
    if saved.fingerprint != fingerprint and (saved.fit_args is not None or fingerprint is not None):
        differ.append(f"fingerprint: {saved.fingerprint!r} → {fingerprint!r}")
    if differ:
        raise ValueError(
            f"{last_dir} was made by a different run ({'; '.join(differ)}); refusing to resume it. "
            "Pass resume=False to start afresh (it deletes the old checkpoints), or another out_dir."
        )


def sum_terms(terms: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Check the objective's output (a non-empty dict of floating scalar tensors whose names do not
    clash with what `fit` logs) and sum its terms in fp32.

    Raises:
        TypeError: not a dict of floating scalar tensors.
        ValueError: a term named like fit's own columns (loss, grad_norm, skipped, adv_loss).
    """
    if not isinstance(terms, Mapping) or not terms:
        raise TypeError(f"objective must return a non-empty dict of named scalar losses, got {type(terms)}")
    for k, t in terms.items():
        if not (torch.is_tensor(t) and t.numel() == 1 and t.is_floating_point()):
            raise TypeError(f"loss term {k!r} must be a floating scalar tensor, got {t!r:.80}")
    if {"grad_norm", "skipped", "adv_loss"} & set(terms) or ("loss" in terms and len(terms) > 1):
        raise ValueError(
            f"term names {list(terms)} clash with the logged 'loss' (sum), 'grad_norm', 'skipped', 'adv_loss'"
        )
    return torch.stack([t.float().reshape(()) for t in terms.values()]).sum()
