"""Checks of a user's choices and options, with one message shape: what is unknown and what is valid.

The lowest layer of vmmlib (standard library only): data readers, objectives, tasks and notebooks
check a name against its choices (`check_choice`) and keyword options against a function's
signature (`check_options`, `call_with_options`) through this module.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any


def check_choice(kind: str, value: Any, choices: Iterable[str]) -> None:
    """Raise ValueError naming the valid choices when `value` is not one of them."""
    choices = sorted(choices)
    if value not in choices:
        raise ValueError(f"unknown {kind} {value!r}; valid choices: {', '.join(map(str, choices))}")


def check_options(
    fn, options: Mapping[str, Any], what: str = "option", *, reserved: Iterable[str] = ()
) -> None:
    """Raise ValueError when `options` holds a keyword `fn` does not take (listing the valid ones) or
    one of `reserved` (names given elsewhere, e.g. a notebook's own parameters)."""
    params = inspect.signature(fn).parameters
    valid = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    taken = sorted(set(options) & set(reserved))
    if taken:
        raise ValueError(f"{what}(s) {', '.join(taken)} are parameters of their own; set them there")
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown {what}(s) {', '.join(unknown)}; valid {what}s: {', '.join(valid)}")


def call_with_options(fn, *args, options: Mapping[str, Any] | None = None, what: str = "option"):
    """`fn(*args, **options)`, rejecting an option `fn` does not take with the list of valid ones."""
    options = dict(options or {})
    valid = [
        name
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    ][len(args) :]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(f"unknown {what}(s) {', '.join(unknown)}; valid {what}s: {', '.join(valid)}")
    return fn(*args, **options)
