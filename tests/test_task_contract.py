"""Every task keeps the written contract (`vmmlib.tasks.contract.Task`): the names the notebooks and
the `vmm` command call are exactly the contract's, and each task's functions have the contract's
signatures (task-specific options may only be added as keyword arguments with defaults)."""

import inspect
import json
import re
from pathlib import Path

import pytest

from vmmlib.tasks import contract, get_task, list_tasks

ROOT = Path(__file__).parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CALL = re.compile(r"(?<![\w.)])T\.([A-Za-z_]\w*)")


def _called_in_notebooks() -> set[str]:
    names = set()
    for path in NOTEBOOKS:
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                names |= set(CALL.findall("".join(cell["source"])))
    return names


def _called_by_the_cli() -> set[str]:
    return set(
        re.findall(r"get_task\([^)]*\)\.([A-Za-z_]\w*)", (ROOT / "vmmlib" / "app" / "cli.py").read_text())
    )


def test_the_notebooks_and_the_cli_call_exactly_the_contract():
    called = _called_in_notebooks() | _called_by_the_cli()
    assert sorted(called - set(contract.contract_names())) == [], "called but not in the contract"
    assert not called & set(contract.HOOKS), "a hook of vmmlib.ensemble called by a notebook"
    uncalled = set(contract.contract_names()) - called - set(contract.HOOKS)
    assert sorted(uncalled) == [], "in the contract but called by nobody"


def _contract_methods() -> dict[str, inspect.Signature]:
    out = {}
    for name in contract.contract_names():
        member = getattr(contract.Task, name, None)
        if callable(member):
            sig = inspect.signature(member)
            out[name] = sig.replace(parameters=list(sig.parameters.values())[1:])  # drop self
    return out


def _signature_problems(name: str, want: inspect.Signature, have: inspect.Signature) -> list[str]:
    P = inspect.Parameter
    problems = []
    want_params = [p for p in want.parameters.values() if p.kind is not P.VAR_KEYWORD]
    have_params = dict(have.parameters)
    positional = [p.name for p in have.parameters.values() if p.kind is P.POSITIONAL_OR_KEYWORD]
    wanted_positional = [p.name for p in want_params if p.kind is P.POSITIONAL_OR_KEYWORD]
    if positional[: len(wanted_positional)] != wanted_positional:
        problems.append(f"{name}: positional parameters {positional}, the contract has {wanted_positional}")
    for p in want_params:
        got = have_params.get(p.name)
        if got is None:
            problems.append(f"{name}: lacks parameter {p.name}")
        elif got.kind is not p.kind or got.default != p.default:
            problems.append(f"{name}: parameter {got} differs from the contract's {p}")
    wanted = {p.name for p in want_params}
    for p in have.parameters.values():
        extra_ok = p.kind is P.VAR_KEYWORD or (p.kind is P.KEYWORD_ONLY and p.default is not P.empty)
        if p.name not in wanted and not extra_ok:
            problems.append(f"{name}: extra parameter {p} must be keyword-only with a default (an option)")
    if any(p.kind is P.VAR_KEYWORD for p in want.parameters.values()) and not any(
        p.kind is P.VAR_KEYWORD for p in have.parameters.values()
    ):
        problems.append(f"{name}: must take **options")
    return problems


@pytest.mark.parametrize("task", list_tasks())
def test_the_task_keeps_the_contracts_signatures(task):
    T = get_task(task)
    problems = []
    for name, want in _contract_methods().items():
        problems += _signature_problems(name, want, inspect.signature(getattr(T, name)))
    assert problems == []


@pytest.mark.parametrize("task", list_tasks())
def test_the_task_has_the_contracts_constants(task):
    T = get_task(task)
    assert T.NAME == task and isinstance(T.METRIC, str) and T.METRIC
    assert isinstance(T.PRETRAIN_METRIC, str) and T.PRETRAIN_METRIC
    assert all(
        isinstance(getattr(T, n), tuple) for n in ("BACKBONE_PREFIXES", "PRETRAIN_TERMS", "FINETUNE_TERMS")
    )
    from vmmlib.submissions import list_formats

    assert T.SUBMISSION in list_formats()


def test_a_signature_that_drops_a_contract_parameter_is_caught():
    want = _contract_methods()["finetune_datasets"]

    def finetune_datasets(data, fold, *, scheme="seed"):  # n_folds missing
        pass

    def with_a_positional_option(data, n_folds, fold, scheme):
        pass

    assert _signature_problems("f", want, inspect.signature(finetune_datasets))
    assert _signature_problems("f", want, inspect.signature(with_a_positional_option))


def test_a_module_missing_a_required_name_is_refused_and_defaults_fill_hooks():
    import types

    module = types.ModuleType("fake_task")
    with pytest.raises(TypeError, match="lacks"):
        contract.bind(module)
    for name in contract.required_names():
        setattr(module, name, object())
    module.NAME, module.METRIC = "fake", "score"
    module.combine = lambda predictions, weights, *, rank_decay=1.0: predictions[0]
    module.write_predictions = lambda out_dir, prediction: out_dir
    bound = contract.bind(module)
    assert bound.oof_breakdown({}, None) == {}
    assert (bound.SUBMISSION, bound.PRETRAIN_METRIC, bound.BACKBONE_PREFIXES) == ("fake", "score", ())
    assert bound.ensemble_search_space({"rank_decay": 1.0}) == {}
    with pytest.raises(ValueError, match="unknown ensemble option.*top_k; valid: rank_decay"):
        bound.ensemble_search_space({"top_k": 1})
    assert set(contract.contract_names()) - set(contract.required_names()) <= {
        *contract.DEFAULT_CONSTANTS,
        *contract.DEFAULTS,
        *contract.DERIVED,
    }


def test_a_task_writes_at_most_18_names_and_identity_is_data():
    required = contract.required_names()
    assert len(required) <= 18, required
    assert {"NAME", "METRIC"} <= set(required) and "SUBMISSION" in contract.DEFAULT_CONSTANTS
    assert not {"make_sample", "explore", "build_model", "fold_table", "plot_fold"} & set(required)


def test_the_options_table_names_contract_methods_and_the_notebook_parameter_feeding_them():
    methods = _contract_methods()
    assert set(contract.OPTIONS) <= set(methods)
    cells = ["".join(c["source"]) for p in NOTEBOOKS for c in json.loads(p.read_text())["cells"]]
    for name, fed_by in contract.OPTIONS.items():
        param = fed_by.split()[0]
        if name in contract.HOOKS:  # fed through oof_scorer and write_submission
            name = "write_submission" if name == "write_predictions" else "oof_scorer"
        if param.endswith("_options"):  # a notebook parameter: some cell passes it to the method
            assert any(f"T.{name}" in c and (param in c or "**options" in c) for c in cells), (name, param)


def _library_source() -> str:
    return "\n".join(p.read_text() for p in (ROOT / "vmmlib").rglob("*.py"))


def test_objective_attributes_and_model_hooks_are_the_ones_the_library_reads_and_tasks_set():
    source = _library_source()
    read = set(re.findall(r"(?:getattr|hasattr)\(objective, \"(\w+)\"", source))
    assert read == set(contract.OBJECTIVE_ATTRIBUTES)
    tasks = "\n".join(
        p.read_text() for p in (ROOT / "vmmlib").glob("*/*.py") if p.parent.name in ("tasks", "objectives")
    )
    assert set(re.findall(r"\bobjective\.(\w+) = ", tasks)) <= set(contract.OBJECTIVE_ATTRIBUTES)
    for hook in contract.MODEL_HOOKS:
        assert re.search(rf"getattr\([\w.]+, \"{hook}\"", source), f"nothing calls the model hook {hook}"
