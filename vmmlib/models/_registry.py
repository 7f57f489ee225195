"""A tiny timm-style model registry.

Every variant is a factory function decorated with `@register_model`; its function name is the model
name. Notebooks and tests build models only through `create_model(name, **overrides)`, where the
overrides are fields of the family's config dataclass (`num_tags=...`, `text_model_dir=...`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import typing
from collections.abc import Callable

from torch import nn

_MODEL_FACTORIES: dict[str, Callable[..., nn.Module]] = {}
_MODEL_MODULES: dict[str, str] = {}


class UnknownModelError(KeyError, ValueError):
    """Raised for a model name that is not registered; the message lists the valid names.

    It is both a `KeyError` (a failed registry look-up) and a `ValueError` (a bad parameter value),
    so callers may catch either.
    """

    def __str__(self) -> str:  # KeyError would print the message quoted, as repr()
        return str(self.args[0]) if self.args else ""


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a model factory under its function name. Names must be unique across vmmlib."""
    name = fn.__name__
    if name in _MODEL_FACTORIES:
        raise ValueError(f"model {name!r} is already registered (by {_MODEL_MODULES[name]})")
    _MODEL_FACTORIES[name] = fn
    _MODEL_MODULES[name] = fn.__module__
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered models matching an fnmatch `pattern` (e.g. ``"*vlad*"``)."""
    return sorted(fnmatch.filter(_MODEL_FACTORIES, pattern))


def is_model(name: str) -> bool:
    """Whether `name` is a registered model."""
    return name in _MODEL_FACTORIES


def model_module(name: str) -> str:
    """The module (model family) that registered `name`."""
    _check(name)
    return _MODEL_MODULES[name]


def create_model(name: str, **overrides) -> nn.Module:
    """Build the registered model `name`; `overrides` replace fields of its config dataclass.

    Raises:
        UnknownModelError: (a KeyError and a ValueError) when `name` is not registered; the message
            lists every valid name.
        ValueError: when an override is not a field of the family's config; the message lists them.
    """
    _check(name)
    unknown = sorted(set(overrides) - set(model_options(name)))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for model {name!r}; "
            f"valid options: {', '.join(model_options(name))}"
        )
    checkpointed = overrides.pop("activation_checkpointing", False)
    model = _MODEL_FACTORIES[name](**overrides)
    if checkpointed:  # every model's option: recompute transformer activations in the backward pass
        from vmmlib.models.checkpointing import enable_activation_checkpointing

        enable_activation_checkpointing(model)
    return model


def model_options(name: str) -> list[str]:
    """The overrides `create_model(name, ...)` accepts: the fields of the family's config dataclass
    (found from the factory's return annotation, the model class, and its `__init__(cfg: Config)`),
    and `activation_checkpointing` (every model's: `vmmlib.models.checkpointing`)."""
    _check(name)
    model_class = typing.get_type_hints(_MODEL_FACTORIES[name])["return"]
    hints = typing.get_type_hints(model_class.__init__)
    config = next(t for k, t in hints.items() if k != "return" and dataclasses.is_dataclass(t))
    return [f.name for f in dataclasses.fields(config)] + ["activation_checkpointing"]


def _check(name: str) -> None:
    if name not in _MODEL_FACTORIES:
        raise UnknownModelError(
            f"unknown model {name!r}; registered models: {', '.join(list_models()) or '(none)'}"
        )
