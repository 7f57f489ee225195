"""`fit`'s scalar arguments: the up-front check, and the record of those that shape a result.

- `check_fit_args`: the check `fit` runs first, public so a notebook can run it before loading any
  data (a bad `steps`, `lr` or `schedule` then fails in seconds, not after a cache build).
- `sum_terms`: the check of the objective's output (named scalar terms) and their sum.
- `result_args`: the arguments that change the trained weights, with "off" spelled one way; a
  checkpoint stores them and `fit` refuses to resume one made with others.

Off is 0: every optional number means "off / the default" at 0, and None is accepted the same way.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Callable, Mapping
from typing import Any

import torch

from vmmlib.adversarial import ADVERSARIAL
from vmmlib.optim import SCHEDULES

__all__ = [
    "PRECISIONS",
    "check_fit_args",
    "check_same_run",
    "resolve_mixed_precision",
    "result_args",
    "sum_terms",
]

PRECISIONS = ("auto", "no", "bf16")


def _integer(low: int, optional: bool = True) -> Callable[[Any], bool]:
    def ok(v: Any) -> bool:
        return (optional and v is None) or (
            isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= low
        )

    return ok


def _number(test: Callable[[float], bool], optional: bool = True) -> Callable[[Any], bool]:
    def ok(v: Any) -> bool:
        real = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
        return (optional and v is None) or (real and test(v))

    return ok


_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {  # name: (test, what is valid)
    "steps": (_integer(1, optional=False), "an integer >= 1"),
    "lr": (_number(lambda v: v > 0, optional=False), "a number > 0"),
    "backbone_lr": (_number(lambda v: v >= 0), "a number >= 0; 0: lr"),
    "weight_decay": (_number(lambda v: v >= 0, optional=False), "a number >= 0"),
    "warmup_steps": (_integer(0, optional=False), "an integer >= 0"),
    "backbone_warmup_steps": (_integer(0), "an integer >= 0, or None: warmup_steps"),
    "schedule": (lambda v: v in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
    "schedule_steps": (_integer(0), "an integer >= 0; 0: steps"),
    "decay_rate": (_number(lambda v: 0 < v <= 1, optional=False), "a number in (0, 1]"),
    "adam_eps": (_number(lambda v: v > 0, optional=False), "a number > 0"),
    "grad_clip": (_number(lambda v: v >= 0), "a number >= 0; 0: no clipping"),
    "ema_decay": (_number(lambda v: 0 <= v < 1), "a number in [0, 1); 0: off"),
    "eval_every": (_integer(0), "an integer >= 0; 0: at the end only"),
    "save_every": (_integer(0), "an integer >= 0; 0: off"),
    "save_minutes": (_number(lambda v: v >= 0), "a number >= 0; 0: off"),
    "log_every": (_integer(0), "an integer >= 0; 0: at the end only"),
    "max_nonfinite_steps": (_integer(0), "an integer >= 0; 0: never give up"),
    "mixed_precision": (lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
    "batch_size": (_integer(1), "an integer >= 1"),
    "adversarial": (lambda v: v is None or v in ADVERSARIAL, f"one of {', '.join(ADVERSARIAL)}"),
    "adv_epsilon": (_number(lambda v: v > 0, optional=False), "a number > 0"),
    "adv_alpha": (_number(lambda v: v > 0, optional=False), "a number > 0"),
    "adv_steps": (_integer(1, optional=False), "an integer >= 1"),
    "adv_param_pattern": (lambda v: isinstance(v, str) and _regex(v), "a non-empty regular expression"),
    "layer_lr_decay": (_number(lambda v: 0 <= v <= 1), "a number in (0, 1]; 0: off"),
    "swa_last": (_integer(0), "an integer >= 0; 0: off"),
}


def _regex(v: str) -> bool:
    try:
        re.compile(v)
    except re.error:
        return False
    return bool(v)


def check_fit_args(
    *,
    steps: int,
    lr: float,
    backbone_lr: float | None = None,
    weight_decay: float = 0.01,
    warmup_steps: int = 0,
    backbone_warmup_steps: int | None = None,
    schedule: str = "linear",
    schedule_steps: int | None = 0,
    decay_rate: float = 0.9,
    adam_eps: float = 1e-8,
    grad_clip: float | None = 1.0,
    ema_decay: float | None = 0.0,
    eval_every: int | None = 0,
    save_every: int | None = 0,
    save_minutes: float | None = 0.0,
    log_every: int | None = 10,
    max_nonfinite_steps: int | None = 5,
    mixed_precision: str = "auto",
    batch_size: int | None = None,
    adversarial: str | None = "none",
    adv_epsilon: float = 1.0,
    adv_alpha: float = 0.3,
    adv_steps: int = 3,
    adv_param_pattern: str = "word_embeddings",
    layer_lr_decay: float | None = 0.0,
    swa_last: int | None = 0,
) -> None:
    """Check `fit`'s scalar arguments (same names, meanings and defaults as `fit`'s).

    `batch_size` is not `fit`'s (the loader has it) but is checked here too for notebooks.

    Raises:
        ValueError: naming every invalid argument with its valid range or choices.
    """
    values = dict(locals())
    problems = [
        f"{name}={values[name]!r} ({valid})" for name, (ok, valid) in _RULES.items() if not ok(values[name])
    ]
    if _integer(2, optional=False)(swa_last) and not eval_every:
        problems.append(
            f"swa_last={swa_last!r} needs eval_every >= 1 (SWA averages the weights of every eval_every "
            "steps and the final ones; with eval_every=0 there is only the final one)"
        )
    if problems:
        raise ValueError("invalid fit argument(s): " + "; ".join(problems))


def resolve_mixed_precision(mixed_precision: str) -> str:
    """ "auto" → "bf16" on a bf16-capable GPU, else "no"; "no" and "bf16" stay."""
    if mixed_precision == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    return mixed_precision


def result_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of `fit` that shape the trained weights, "off" spelled 0 (JSON values).

    `steps` is left out (a run may be extended on purpose), and so are the eval/save/log periods
    (but `eval_every` with SWA: it chooses the averaged weights). `metric` and `greater_is_better`
    are in: they choose the best checkpoint. A trick's arguments are recorded only when it is on, so
    a checkpoint written before the trick existed still resumes with it off.
    """
    keys = ("lr", "backbone_lr", "backbone_prefixes", "weight_decay", "warmup_steps", "backbone_warmup_steps")
    keys += ("schedule", "schedule_steps", "decay_rate", "adam_eps", "grad_clip", "ema_decay")
    out = {k: args[k] for k in (*keys, "metric", "greater_is_better")}
    for k in ("backbone_lr", "schedule_steps", "grad_clip", "ema_decay"):
        out[k] = out[k] or 0
    out["backbone_prefixes"] = list(out["backbone_prefixes"])
    out["mixed_precision"] = resolve_mixed_precision(args["mixed_precision"])
    if args.get("adversarial") not in (None, "", "none"):
        names = ("adversarial", "adv_epsilon", "adv_param_pattern")
        names += ("adv_alpha", "adv_steps") if args["adversarial"] == "pgd" else ()
        out.update({k: args[k] for k in names})
    if args.get("layer_lr_decay"):
        out["layer_lr_decay"] = args["layer_lr_decay"]
    if args.get("swa_last"):
        out["swa_last"], out["swa_every"] = args["swa_last"], args["eval_every"] or 0
    return json.loads(json.dumps(out))


# the optimiser's own settings: a resume with `reset_optimizer` may change them
OPTIMIZER_ARGS = ("lr", "backbone_lr", "weight_decay", "warmup_steps", "backbone_warmup_steps", "schedule")
OPTIMIZER_ARGS += ("schedule_steps", "decay_rate", "adam_eps", "layer_lr_decay")


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
