"""`FitConfig` is the one source of `fit`'s options: its signature, checks, resume rules, optimiser
settings and the notebooks' arguments all derive from the fields; SWA has its own cadence."""

import dataclasses
import inspect

import pytest
import torch

from tests.test_train import TinyNet, run_fit
from vmmlib.options import check_options
from vmmlib.train.config import (
    OPTIMIZER_ARGS,
    FitConfig,
    check_fit_args,
    fit_params,
    optimizer_args,
    result_args,
)
from vmmlib.train.loop import fit
from vmmlib.train.optim import make_optimizer

FIELDS = dataclasses.fields(FitConfig)


def test_fit_signature_and_the_optimiser_arguments_are_the_config_fields():
    params = inspect.signature(fit).parameters
    assert list(params)[4:] == [f.name for f in FIELDS]
    assert all(params[f.name].default == f.default for f in FIELDS if f.default is not dataclasses.MISSING)
    assert all(f.metadata["doc"] and "\n" not in f.metadata["doc"] for f in FIELDS)  # one line of doc each
    takes = set(inspect.signature(make_optimizer).parameters) - {"model", "fused"}
    assert set(optimizer_args(FitConfig(steps=1, lr=1.0, out_dir="x").as_dict())) == takes
    assert set(OPTIMIZER_ARGS) <= takes and "grad_clip" not in OPTIMIZER_ARGS
    check_options(fit, {"grad_accum_steps": 2, "swa_every": 3}, "fit option")
    with pytest.raises(ValueError, match="unknown fit option.*adversary"):
        check_options(fit, {"adversary": "fgm"}, "fit option")
    with pytest.raises(ValueError, match="unknown fit option.*adversary"):
        check_fit_args(steps=1, lr=1.0, adversary="fgm")


def test_notebook_parameters_pass_through_and_tricks_are_recorded_only_when_on():
    params = {"steps": 5, "lr": 0.1, "out_dir": "runs/x", "batch_size": 8, "seed": 3, "model": "m"}
    assert fit_params(params) == {"steps": 5, "lr": 0.1, "seed": 3}  # out_dir is the run folder, not this
    base = FitConfig(steps=5, lr=0.1, out_dir="x").as_dict()
    assert "grad_accum_steps" not in result_args(base) and "swa_every" not in result_args(base)
    swa = result_args({**base, "swa_last": 2, "eval_every": 4})
    assert (swa["swa_last"], swa["swa_every"]) == (2, 4)  # what checkpoints before swa_every recorded
    assert result_args({**base, "swa_last": 2, "eval_every": 4, "swa_every": 3})["swa_every"] == 3
    assert result_args({**base, "grad_accum_steps": 4})["grad_accum_steps"] == 4
    with pytest.raises(ValueError, match="grad_accum_steps=0 \\(an integer >= 1\\)"):
        check_fit_args(steps=1, lr=1.0, grad_accum_steps=0)
    check_fit_args(steps=10, lr=1e-3, swa_last=3, eval_every=0, swa_every=2)


def test_swa_has_its_own_cadence_apart_from_evaluation(tmp_path):
    calls = []
    result = run_fit(
        TinyNet(), tmp_path, steps=10, swa_last=3, swa_every=2, eval_every=5,
        eval_fn=lambda m: calls.append(1) or {"mse": 0.0},
    )  # fmt: skip
    assert result.swa_steps == [6, 8, 10] and len(calls) == 3  # evaluated at 5, 10 and the SWA mean
    cfg = FitConfig(steps=10, lr=1e-2, out_dir=tmp_path / "cfg", log_every=2, progress=False)
    same = fit(TinyNet(), _loader(), _objective, cfg, swa_last=3, swa_every=2)  # a FitConfig plus options
    assert same.swa_steps == [6, 8, 10]


def _loader():
    from tests.test_train import BATCH, regression_data
    from vmmlib.train.loop import make_loader

    return make_loader(regression_data(), BATCH, shuffle=True, seed=0)


def _objective(model, batch):
    x, y = batch
    return {"mse": torch.nn.functional.mse_loss(model(x), y)}


@pytest.mark.parametrize("notebook", ["10_pretrain", "20_finetune"])
def test_the_notebooks_pass_fit_options_only_through_fit_params_with_the_configs_types(notebook):
    """A notebook's fit parameters are FitConfig fields of its type (papermill's literal cell cannot be
    generated: it is checked instead), and the training call passes them as `**fit_params(params)`:
    no option is spelled again in the call but the ones the notebook itself provides (notebook=False)."""
    import ast
    import json
    from pathlib import Path

    import papermill

    path = Path(__file__).parent.parent / "notebooks" / f"{notebook}.ipynb"
    declared = papermill.inspect_notebook(str(path))
    for f in FIELDS:
        if f.name in declared and f.metadata["notebook"]:
            kind = declared[f.name]["inferred_type_name"]
            assert kind in str(f.type), (f.name, kind, f.type)
    cells = json.loads(path.read_text())["cells"]
    calls = [
        node
        for c in cells
        if c["cell_type"] == "code" and "fit(" in "".join(c["source"])
        for node in ast.walk(ast.parse("".join(c["source"])))
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "fit"
    ]
    assert len(calls) == 1
    spelled = {k.arg for k in calls[0].keywords if k.arg}
    starred = [ast.unparse(k.value) for k in calls[0].keywords if k.arg is None]
    assert "fit_params(params)" in starred
    by_name = {f.name: f for f in FIELDS}
    assert all(not by_name[n].metadata["notebook"] for n in spelled), spelled  # nothing twice
