"""notebooks/mae_demo_results.ipynb: valid nbformat 4 without outputs, loads only catalog entries
that exist, and runs top to bottom against a tiny completed `mae_pretrain` run.

Jupyter (nbformat, nbclient, ipykernel) is not a dependency of the project, so the notebook is read
as JSON and its code cells run in order in IPython's `InteractiveShell` (IPython comes with
kedro), in a subprocess started in the project's `notebooks/` folder, as a Jupyter kernel would.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from corpus import write_hdf5_cube

PROJECT_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = PROJECT_ROOT / "notebooks" / "mae_demo_results.ipynb"

# A model and a run small enough for a test (the same sizes as tests/pipelines/test_mae_pretrain_e2e.py).
TINY_RUN = (
    "ingestion.tile_size=16,ingestion.stride=8,ingestion.show_progress=false,"
    "normalisation_stats.show_progress=false,mae.model.image_size=16,mae.model.spatial_patch=4,mae.model.spectral_patch=3,"
    "mae.model.depth=2,mae.model.embed_dim=32,mae.model.num_heads=2,mae.model.decoder_embed_dim=32,mae.model.decoder_depth=1,"
    "mae.model.decoder_num_heads=2,"
    "mae.train.epochs=3,mae.train.warmup_epochs=1,mae.train.progress=false,mae.train.checkpoint_every_steps=2,"
    "mae.loader.batch_size=4,validation.steps=3"
)

# Runs the notebook's code cells in order in one IPython shell; stops at the first that fails.
RUN_CELLS = r"""
import json, sys
from IPython.core.interactiveshell import InteractiveShell

notebook = json.load(open(sys.argv[1], encoding="utf-8"))
shell = InteractiveShell.instance()
for number, cell in enumerate(notebook["cells"]):
    if cell["cell_type"] != "code":
        continue
    result = shell.run_cell("".join(cell["source"]), store_history=True)
    if not result.success:
        print(f"NOTEBOOK CELL {number} FAILED", file=sys.stderr)
        sys.exit(1)
print("NOTEBOOK RAN")
"""


def _notebook() -> dict:
    return json.loads(NOTEBOOK.read_text(encoding="utf-8"))


def _code(notebook: dict) -> str:
    return "\n".join("".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code")


def test_the_notebook_is_nbformat_4_json_without_outputs():
    notebook = _notebook()
    assert notebook["nbformat"] == 4 and notebook["nbformat_minor"] >= 4
    assert notebook["metadata"]["kernelspec"]["language"] == "python"
    ids = [cell.get("id") for cell in notebook["cells"]]
    if notebook["nbformat_minor"] >= 5:  # nbformat 4.5 requires unique cell ids
        assert all(ids) and len(set(ids)) == len(ids)
    for cell in notebook["cells"]:
        assert cell["cell_type"] in {"markdown", "code"}
        assert isinstance(cell["source"], (str, list)) and "".join(cell["source"]).strip()
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, "commit the notebook without outputs"
    kinds = [cell["cell_type"] for cell in notebook["cells"]]
    assert kinds[0] == "markdown" and kinds.count("markdown") >= kinds.count("code"), "each step is explained"


def test_the_notebook_loads_only_entries_of_the_catalog():
    code = _code(_notebook())
    assert "%load_ext kedro.ipython" in code
    loaded = set(re.findall(r"""catalog\.load\(\s*["']([^"']+)["']\s*\)""", code))
    assert {"reconstruction_metrics", "band_stats", "mae_history", "ingestion_report"} <= loaded
    catalog = yaml.safe_load((PROJECT_ROOT / "conf" / "base" / "catalog.yml").read_text())
    assert not loaded - set(catalog), f"not in conf/base/catalog.yml: {sorted(loaded - set(catalog))}"


@pytest.mark.e2e
@pytest.mark.slow  # a whole tiny mae_pretrain run plus the notebook: `make test-all`
def test_the_notebook_runs_against_a_tiny_completed_run(kedro_project):
    raw = kedro_project.raw("tiny")
    for i in range(3):
        write_hdf5_cube(raw / f"scene{i}.h5", (6, 32, 32), wavelengths=[450, 500, 550, 600, 650, 700], seed=i)
    # The notebook reads the default dataset, so the run and the notebook both take it from globals.
    kedro_project.path("conf/local/globals.yml").write_text("default_dataset: tiny\n")
    run = kedro_project.kedro("run", "--pipeline", "mae_pretrain", "--params", TINY_RUN)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]

    notebooks = kedro_project.path("notebooks")
    notebooks.mkdir()
    shutil.copy(NOTEBOOK, notebooks / NOTEBOOK.name)
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_RUN_ID"}
    env.update(KEDRO_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1", MPLBACKEND="Agg", COLUMNS="200")
    done = subprocess.run([sys.executable, "-c", RUN_CELLS, NOTEBOOK.name], cwd=notebooks, env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "NOTEBOOK RAN" in done.stdout, output[-6000:]
    assert "dataset: tiny" in done.stdout
    assert "model beats the baselines:" in done.stdout
    assert done.stdout.count("IPython.core.display.Image object") == 4, output[-6000:]
    assert not list(notebooks.glob("mlflow.db*")), "the notebook opened a second MLflow store in notebooks/"
