"""The notebooks run headless, top to bottom, on the demo environment's data, and are saved without outputs.

They run in the shared scratch copy of the project where a tiny demo run has written every dataset they read
(the ``demo_run`` fixture), so the test needs no data in the checkout and never touches it.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

PROJECT_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((PROJECT_ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 120
PSS_VARIABLES = ("PSS_ROOT", "PSS_DATA", "PSS_PRECOMPUTE", "PSS_CHECKPOINTS", "PSS_OUTPUT", "PSS_CLASSIFIER_CKPT")


def test_notebooks_are_saved_without_outputs() -> None:
    assert {path.name for path in NOTEBOOKS} >= {"explore_pss.ipynb", "explore_catalog.ipynb"}
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert code, path.name
        assert all(cell.outputs == [] and cell.execution_count is None for cell in code), path.name


def run_notebook(project: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> nbformat.NotebookNode:
    """Execute ``notebooks/<name>`` of ``project`` as Jupyter would: a python3 kernel started in its folder."""
    monkeypatch.setenv("KEDRO_ENV", "demo")  # the kernel inherits it; the notebooks' %reload_kedro reads it
    for variable in (*PSS_VARIABLES, "MPLBACKEND"):  # figures render inline, as in Jupyter
        monkeypatch.delenv(variable, raising=False)
    notebook = nbformat.read(project / "notebooks" / name, as_version=4)
    client = NotebookClient(
        notebook, kernel_name="python3", timeout=CELL_TIMEOUT_S, startup_timeout=60,
        resources={"metadata": {"path": str(project / "notebooks")}},
    )
    client.execute()
    return notebook


def outputs(notebook: nbformat.NotebookNode, mime: str) -> list[str]:
    """Every output of type ``mime`` (``text/plain``, ``image/png``, or ``stream`` for printed text)."""
    found = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if mime == "stream" and output.output_type == "stream":
                found.append(output.text)
            elif mime in output.get("data", {}):
                found.append(output.data[mime])
    return found


@pytest.mark.slow
def test_explore_pss_shows_embeddings_predictions_and_pages(demo_run: Path, monkeypatch) -> None:
    notebook = run_notebook(demo_run, "explore_pss.ipynb", monkeypatch)
    printed = "".join(outputs(notebook, "stream"))
    assert "EmbeddingShards(" in printed and "pages in 6 books" in printed
    assert len(outputs(notebook, "image/png")) == 2  # the strip plot and the page grid


@pytest.mark.slow
def test_explore_catalog_lists_datasets_and_finds_nearest_pages(demo_run: Path, monkeypatch) -> None:
    notebook = run_notebook(demo_run, "explore_catalog.ipynb", monkeypatch)
    printed = "".join(outputs(notebook, "stream"))
    assert '"factory": "Flat"' in printed and '"has_ids": true' in printed
    text = "\n".join(outputs(notebook, "text/plain"))
    assert "page_image_embeddings" in text and "cosine" in text
    assert len(outputs(notebook, "image/png")) == 1  # the query page and its neighbours
