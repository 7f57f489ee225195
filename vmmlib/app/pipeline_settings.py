"""Pipeline-level settings (`vmm run … --set name=value`) and dry runs of a whole pipeline.

A pipeline file may declare `settings:`, the values a user changes for their machine (the data
folder, each backbone folder), used as `{name}` placeholders in the steps' `set:`:

    settings:
      data_dir: data/wbdc                          # the competition's data folder
      text_model_dir: models/chinese-macbert-base  # a local copy of hfl/chinese-macbert-base
    steps:
      - name: pretrain
        set: {data_dir: "{data_dir}", text_model_dir: "{text_model_dir}"}

`vmm run PIPELINE --set text_model_dir=/models/macbert` overrides a setting; so may `run_dir` and,
in a pipeline with a `data:` block, `data_dir` (its `data: dir`). An unknown name is refused with the
list of valid ones. `--dry-run` runs every step as a dry run (`vmmlib.dryrun`) in `<run_dir>-dry-run`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vmmlib.dryrun import dry_out_dir


def parse_settings(items: Sequence[str]) -> dict[str, str]:
    """`["name=value", …]` (the `--set` arguments) → {name: value}; a value may contain `=`.

    Raises:
        ValueError: an item without `=` or with an empty name.
    """
    settings = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--set takes name=value, got {item!r}")
        settings[name.strip()] = value
    return settings


def apply_settings(path: Path, spec: dict[str, Any], given: Mapping[str, str] | None) -> dict[str, str]:
    """Apply `--set` values to a pipeline spec (in place); return the settings as placeholders.

    Raises:
        ValueError: `settings:` not a mapping of names to scalars, a setting named like a built-in
            placeholder, or a given name that is not a setting (naming the valid ones).
    """
    declared = spec.get("settings") or {}
    if not isinstance(declared, dict) or any(isinstance(v, (dict, list)) for v in declared.values()):
        raise ValueError(f"{path}: settings must map names to values (strings), got {declared!r}")
    reserved = {"run_dir", "out_dir", "fold", "n_folds"} | ({"data_dir"} if spec.get("data") else set())
    clash = sorted(reserved & set(declared))
    if clash:
        raise ValueError(f"{path}: settings: {', '.join(clash)} cannot be a setting (a built-in placeholder)")
    settings = {k: "" if v is None else str(v) for k, v in declared.items()}
    valid = sorted({*settings, "run_dir", *({"data_dir"} if spec.get("data") else set())})
    unknown = sorted(set(given or {}) - set(valid))
    if unknown:
        raise ValueError(
            f"{path}: --set: unknown setting(s) {', '.join(unknown)}; valid settings: {', '.join(valid)}"
        )
    for name, value in (given or {}).items():
        if name == "run_dir":
            spec["run_dir"] = value
        elif name == "data_dir" and spec.get("data"):
            spec["data"] = {**spec["data"], "dir": value}
        else:
            settings[name] = value
    return settings


def dry_run_dir(run_dir: Path) -> Path:
    """The run folder of a pipeline's dry run: `<run_dir>-dry-run`, never the real run's."""
    return Path(dry_out_dir(str(run_dir)))


def mark_dry_run(path: Path, steps: list) -> None:
    """Set `dry_run: true` in every step's parameters (`vmmlib.app.pipeline.Step`).

    Raises:
        ValueError: a step's notebook has no `dry_run` parameter.
    """
    for step in steps:
        if "dry_run" not in step.params:
            raise ValueError(
                f"{path}: step {step.name!r}: notebook {step.notebook} has no dry_run parameter, so "
                "it cannot dry-run"
            )
        step.params["dry_run"] = True
