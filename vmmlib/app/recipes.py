"""Every task from its defaults: the notebook parameters that depend on the task, resolved from the
task's sample recipe.

`papermill notebooks/20_finetune.ipynb out.ipynb -p task wbdc` must run as it does for qqbrowser. A
notebook's parameters cell therefore leaves each task-dependent parameter empty ("" / {} / [] / 0)
and calls `fill_task_defaults(globals(), "<notebook>")` first. A parameter still empty that the run
did not pass (papermill's injected cell, or an edit of the cell) takes:

- a location: `data_dir` → `data/sample/<task>` (made by the notebook when missing), `out_dir` →
  `runs/sample/<task>/<step>`, `finetune_dirs` / `inference_dirs` → the folders the notebook before
  writes by default, so 00 → 10 → 20 → 30 → 40 chain with no parameter but `task`;
- everything else (model, options, objectives, folds, splits) from the task's *sample recipe*: the
  params file of the first step running that notebook in `params/pipelines/<task>_sample.yaml` (a
  step that starts from scratch preferred). A task without such a step (MUGE has no pretraining in
  its sample pipeline) borrows the model and data options of its fine-tuning recipe, with every
  pretraining term at weight 1.

`check_task_model` refuses another task's model by naming the `model` parameter and the
`params/<task>/` files to start from (instead of the option its config then rejects).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any

from vmmlib.runs import injected_names, project_root, read_yaml

# notebook → the parameters whose empty default means "the task's"; the value says where it comes
# from: "recipe" (the sample recipe), or a location template filled with {task}.
TASK_PARAMETERS: dict[str, dict[str, Any]] = {
    "00_explore": {"data_dir": "data/sample/{task}", "out_dir": "runs/sample/{task}/explore"},
    "10_pretrain": {
        "data_dir": "data/sample/{task}",
        **dict.fromkeys(
            ("data_options", "model", "model_options", "objectives", "objective_options"), "recipe"
        ),
        "out_dir": "runs/sample/{task}/pretrain",
    },
    "20_finetune": {
        "data_dir": "data/sample/{task}",
        **dict.fromkeys(
            ("data_options", "model", "model_options", "n_folds", "fold_options", "objectives"), "recipe"
        ),
        **dict.fromkeys(("objective_options", "predict_options", "fit_options"), "recipe"),
        "out_dir": "runs/sample/{task}/finetune-fold{{fold}}",
    },
    "30_inference": {
        "data_dir": "data/sample/{task}",
        "finetune_dirs": ["runs/sample/{task}/finetune-fold*"],
        "splits": "recipe",
        "predict_options": "recipe",
        "out_dir": "runs/sample/{task}/inference",
    },
    "40_ensemble": {
        "data_dir": "data/sample/{task}",
        "inference_dirs": ["runs/sample/{task}/inference"],
        "split": "recipe",
        "ensemble_options": "recipe",
        "out_dir": "runs/sample/{task}/ensemble",
    },
}
MODEL_SPECIFIC = {"model_options"}  # taken from the recipe only with the recipe's model


def _empty(value: Any) -> bool:
    return value in ("", 0, None) and not isinstance(value, bool) or value == {} or value == []


def _fill(template: Any, task: str) -> Any:
    if isinstance(template, list):
        return [_fill(t, task) for t in template]
    return template.format(task=task)


def sample_recipe(task: str, notebook: str) -> tuple[Path | None, dict[str, Any]]:
    """The params file (relative to the project root) and values of `task`'s sample recipe for
    `notebook` (e.g. "20_finetune"); (None, {}) when the sample pipeline has no such step."""
    root = project_root()
    pipeline = root / "params" / "pipelines" / f"{task}_sample.yaml"
    if not pipeline.is_file():
        raise FileNotFoundError(
            f"no sample pipeline {pipeline} for task {task!r}: the sample recipes live in the "
            "repository's params/ folder; run from a checkout of vmmlib"
        )
    steps = [
        s for s in read_yaml(pipeline).get("steps", []) if Path(str(s.get("notebook", ""))).stem == notebook
    ]
    steps.sort(key=lambda s: "pretrain_dir" in (s.get("set") or {}))  # from scratch first (stable)
    if not steps or not steps[0].get("params"):
        return None, {}
    path = Path(steps[0]["params"])
    return path, read_yaml(root / path)


def task_defaults(task: str, notebook: str) -> tuple[str, dict[str, Any]]:
    """Every task-dependent parameter of `notebook` for `task`, and where the values come from."""
    from vmmlib.tasks import get_task

    if notebook not in TASK_PARAMETERS:
        raise ValueError(f"unknown notebook {notebook!r}; valid: {', '.join(TASK_PARAMETERS)}")
    T = get_task(task)  # an unknown task fails here, listing the valid ones
    path, recipe = sample_recipe(task, notebook)
    source = str(path) if path else ""
    if path is None and notebook == "10_pretrain":  # borrow the fine-tuning recipe's model and data
        path, recipe = sample_recipe(task, "20_finetune")
        recipe = {k: recipe[k] for k in ("data_options", "model", "model_options") if k in recipe}
        recipe["objectives"] = dict.fromkeys(T.PRETRAIN_TERMS, 1.0)
        source = f"{path} (model and data; every pretraining term at weight 1)"
    values = {}
    for name, where in TASK_PARAMETERS[notebook].items():
        if where != "recipe":
            values[name] = _fill(where, task)
        elif name in recipe:
            values[name] = recipe[name]
    if notebook == "40_ensemble":  # options naming the recipe's model folders name the defaults' ones
        dirs = recipe.get("inference_dirs")
        values["ensemble_options"] = {
            k: (values["inference_dirs"] if v == dirs else v)
            for k, v in values.get("ensemble_options", {}).items()
        }
    return source, values


def fill_task_defaults(namespace: MutableMapping[str, Any], notebook: str) -> dict[str, Any]:
    """Give each task-dependent parameter still empty and not passed its task default (see module
    docstring); check the model fits the task. Call it with the notebook's `globals()` right after
    the parameters cell.

    Returns:
        The parameters it set, name → value (printed too, with the recipe file they come from).

    Raises:
        ValueError: an unknown task (listing the tasks), or a model of another task (`check_task_model`).
    """
    task = namespace["task"]
    source, defaults = task_defaults(task, notebook)
    passed = injected_names(namespace.get("In", []))
    recipe_model = defaults.get("model")
    filled = {}
    for name, value in defaults.items():
        if name in passed or name not in namespace or not _empty(namespace[name]):
            continue
        if name in MODEL_SPECIFIC and namespace.get("model") not in ("", recipe_model):
            continue  # options of the recipe's model do not fit a model the run chose
        namespace[name] = filled[name] = value
    if namespace.get("model"):
        check_task_model(task, namespace["model"], notebook)
    if filled:
        print(f"task {task} defaults" + (f" (sample recipe {source})" if source else "") + ":")
        for name, value in filled.items():
            print(f"  {name} = {value!r}")
    return filled


def _recipe_models(task: str) -> set[str]:
    models = set()
    for path in sorted((project_root() / "params" / task).glob("*.yaml")):
        model = read_yaml(path).get("model")
        if isinstance(model, str) and model:
            models.add(model)
    return models


def check_task_model(task: str, model: str, notebook: str = "20_finetune") -> None:
    """Refuse a model from another task's family, naming the `model` parameter and the
    `params/<task>/` files to start from. A family no recipe uses is let through (a new model)."""
    from vmmlib.models import is_model, model_module
    from vmmlib.tasks import list_tasks

    if not is_model(model):
        return  # the notebook's own check lists the registered names
    family = model_module(model)
    mine = _recipe_models(task)
    if family in {model_module(m) for m in mine if is_model(m)}:
        return
    owners = [
        t
        for t in list_tasks()
        if t != task and family in {model_module(m) for m in _recipe_models(t) if is_model(m)}
    ]
    if not owners:
        return
    step = notebook.split("_", 1)[-1]
    files = sorted(
        str(p.relative_to(project_root())) for p in (project_root() / "params" / task).glob(f"*{step}*.yaml")
    )
    raise ValueError(
        f"parameter model={model!r} is a {'/'.join(owners)} model; task {task!r} builds "
        f"{', '.join(sorted(mine))} in its recipes. Pass one of those as `model` (or leave `model` "
        f"empty for the sample recipe), or start from a params file of the task: "
        f"{', '.join(files) or f'params/{task}/'} (papermill … -f FILE)"
    )


def describe_defaults(task: str) -> Mapping[str, dict[str, Any]]:
    """Every notebook's task defaults for `task` (what `-p task {task}` alone runs with)."""
    return {nb: task_defaults(task, nb)[1] for nb in TASK_PARAMETERS}
