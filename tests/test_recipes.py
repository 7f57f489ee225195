"""Every task from its defaults (issue 19.3): `-p task X` alone resolves every task-dependent notebook
parameter from the task's sample recipe; another task's model is refused naming `model` and the
`params/<task>/` files; and a fine-tune that does not improve finishes with a warning (issue 17.4)."""

import json
from pathlib import Path

import papermill
import pytest

from vmmlib.app.pipeline_file import check_values, notebook_parameters
from vmmlib.app.recipes import TASK_PARAMETERS, check_task_model, task_defaults
from vmmlib.app.report import export_report
from vmmlib.models import list_models
from vmmlib.tasks import get_task, list_tasks

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("task", list_tasks())
def test_every_notebook_resolves_its_task_dependent_parameters_for_every_task(task):
    for notebook, declared in TASK_PARAMETERS.items():
        defaults, annotations = notebook_parameters(ROOT / "notebooks" / f"{notebook}.ipynb")
        assert set(declared) <= set(defaults), notebook
        _, values = task_defaults(task, notebook)
        check_values(values, defaults, annotations, notebook, task)  # names and types
        assert values["data_dir"] == f"data/sample/{task}" and f"runs/sample/{task}/" in values["out_dir"]
        if "model" in declared:
            assert values["model"] in list_models()
            check_task_model(task, values["model"], notebook)
            terms = (
                get_task(task).PRETRAIN_TERMS if notebook == "10_pretrain" else get_task(task).FINETUNE_TERMS
            )
            assert values["objectives"] and set(values["objectives"]) <= set(terms)
        if notebook == "20_finetune":
            assert values["n_folds"] >= 1


def test_another_tasks_model_is_refused_naming_the_model_parameter_and_the_tasks_params_files():
    with pytest.raises(
        ValueError, match=r"parameter model='mixnextvlad_qq_tiny' is a qqbrowser model.*params/wbdc/"
    ):
        check_task_model("wbdc", "mixnextvlad_qq_tiny", "20_finetune")


def test_finetune_with_only_task_wbdc_runs_and_a_run_that_does_not_improve_ends_with_a_warning(tmp_path):
    data = get_task("wbdc").make_sample(
        tmp_path / "data", labeled=60, unlabeled=10, test=5, raw_frame_videos=0
    )
    out = tmp_path / "run"
    papermill.execute_notebook(
        str(ROOT / "notebooks/20_finetune.ipynb"), str(tmp_path / "ft.ipynb"), kernel_name="python3",
        progress_bar=False, cwd=str(ROOT),
        # model, objectives, folds and options: the wbdc sample recipe. A learning rate this small
        # leaves every prediction as it was: the validation F1 cannot improve.
        parameters={"task": "wbdc", "data_dir": str(data), "out_dir": str(out), "steps": 2, "eval_every": 1,
                    "batch_size": 8, "warmup_steps": 0, "lr": 1e-12, "backbone_lr": 1e-12},
    )  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mean_f1"] <= metrics["mean_f1_before"]
    assert metrics["warnings"] and "fine-tuning did not improve mean_f1" in metrics["warnings"][0]
    params = (out / "params.yaml").read_text()
    assert "model: wbdc_single_stream_tiny" in params and "n_folds: 3" in params
    page = export_report(tmp_path / "ft.ipynb", tmp_path / "ft.html", out).read_text()
    top = page[page.index('class="vmm-summary"') :][:3000]
    assert "fine-tuning did not improve" in top and "wbdc_single_stream_tiny" in top and "mean_f1" in top
    assert "torch._C.Generator" not in page
