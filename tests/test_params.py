"""Every params file lists exactly its notebook's parameters (papermill only warns on unknown names)."""

from pathlib import Path

import papermill
import pytest
import yaml

from vmmlib.app.pipeline import load_pipeline
from vmmlib.models import list_models, model_options
from vmmlib.options import check_choice

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_OF = {  # params file name prefix → notebook
    "explore": "00_explore.ipynb",
    "pretrain": "10_pretrain.ipynb",
    "finetune": "20_finetune.ipynb",
    "inference": "30_inference.ipynb",
    "ensemble": "40_ensemble.ipynb",
}
PARAM_FILES = sorted(p for p in (ROOT / "params").glob("*/*.yaml") if p.parent.name != "pipelines")


def _notebook_for(path: Path) -> Path:
    for prefix, notebook in NOTEBOOK_OF.items():
        if path.stem == prefix or path.stem.endswith("_" + prefix) or path.stem.startswith(prefix):
            return ROOT / "notebooks" / notebook
    raise AssertionError(f"{path}: name does not say which notebook it is for ({', '.join(NOTEBOOK_OF)})")


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_params_file_has_exactly_the_notebook_parameters(path):
    declared = set(papermill.inspect_notebook(str(_notebook_for(path))))
    given = set(yaml.safe_load(path.read_text()))
    assert given == declared, f"missing: {sorted(declared - given)}, unknown: {sorted(given - declared)}"


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_params_file_names_a_registered_model_and_only_its_options(path):
    values = yaml.safe_load(path.read_text())
    if "model" not in values:
        return
    check_choice("model", values["model"], list_models())
    assert set(values["model_options"]) <= set(model_options(values["model"]))


@pytest.mark.parametrize("path", sorted((ROOT / "params" / "pipelines").glob("*.yaml")), ids=lambda p: p.name)
def test_pipeline_files_resolve(path):
    pipe = load_pipeline(path)
    assert pipe.steps and all(Path(s.notebook).exists() for s in pipe.steps)


def test_every_notebook_is_stripped_and_has_a_parameters_cell():
    import json

    for nb_path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(nb_path.read_text())
        assert nb["metadata"]["kernelspec"]["name"] == "python3", nb_path
        cells = nb["cells"]
        assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in cells), nb_path
        assert all(
            not c.get("outputs") and not c.get("execution_count") for c in cells if c["cell_type"] == "code"
        ), nb_path


def test_every_notebook_is_nbformat_4_5_with_unique_cell_ids():
    # JupyterLab marks a notebook without cell ids as modified the moment it opens it.
    import nbformat

    for nb_path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(nb_path, as_version=nbformat.NO_CONVERT)
        assert (nb.nbformat, nb.nbformat_minor) >= (4, 5), nb_path
        ids = [c.get("id") for c in nb.cells]
        assert all(ids) and len(set(ids)) == len(ids), nb_path
        nbformat.validate(nb)
