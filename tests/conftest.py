"""Shared fixtures: tiny sample books on disk, tiny model specs (offline, seeded), scratch copies of the project
and one tiny demo run of the whole project that every test reading its outputs shares."""
from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from multimodal_suite.datasets import ComicBookFolderDataset
from multimodal_suite.pipelines.demo_data.nodes import generate_comic_books

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PSS_VARIABLES = ("PSS_ROOT", "PSS_DATA", "PSS_PRECOMPUTE", "PSS_CHECKPOINTS", "PSS_OUTPUT", "PSS_CLASSIFIER_CKPT")
# Runtime parameters of the shared demo run: every pipeline, on six short books and two small tar shards, with
# one-layer models.
TINY_RUN = {
    "demo_data": {"num_books": 6, "min_pages": 12, "max_pages": 16, "long_book_pages": 0, "seed": 3},
    "pss": {
        "precompute": {"image_model": {"config": {"image_size": 32, "hidden_size": 32, "intermediate_size": 64,
                                                  "num_hidden_layers": 1, "num_attention_heads": 2}},
                       "part_size": 40},
        "model": {"bert_input": 32, "num_layers": 1, "ff_dim": 64, "num_heads": 2},
        "train": {"epochs": 2},
        "split": {"val_fraction": 0.2, "test_fraction": 0.2},
    },
    "demo_data_tagging": {"num_shards": 2, "samples_per_shard": 16, "images_per_folder": 4},
    "tagging": {"models": {"clip_model": {"config": {
        "projection_dim": 32, "vision_config": {"image_size": 32, "hidden_size": 32, "intermediate_size": 64,
                                                "num_hidden_layers": 1, "num_attention_heads": 2}}}}},
}

TINY_IMAGE_MODEL = {
    "source": "config",
    "family": "siglip_vision",
    "seed": 0,
    "config": {"image_size": 32, "patch_size": 16, "hidden_size": 32, "intermediate_size": 64,
               "num_hidden_layers": 1, "num_attention_heads": 2},
}
TEXT_MODEL = {"source": "bundled", "name": "all-MiniLM-L6-v2"}
TINY_BOOKS = {"seed": 7, "num_books": 6, "min_pages": 12, "max_pages": 16, "long_book_pages": 0,
              "unpadded_books": 1, "bad_inputs": True}


@pytest.fixture(autouse=True)
def _hub_offline(monkeypatch):
    """Tests never wait on the model hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_collection(tmp_path_factory):
    """Six short sample books (with every kind of bad input) saved on disk, plus their annotations."""
    files, annotations = generate_comic_books(TINY_BOOKS)
    root = tmp_path_factory.mktemp("books") / "comic_books"
    ComicBookFolderDataset(filepath=str(root)).save(files)
    return root, annotations


def precompute_params_dict() -> dict:
    """pss.precompute parameters with the tiny models."""
    return {"book_source": "annotations", "image_model": TINY_IMAGE_MODEL, "text_model": TEXT_MODEL,
            "batch_size": 8, "text_batch_size": 16, "mixed_precision": True, "device": "cpu", "decode_workers": 2,
            "part_size": 20}


@pytest.fixture(scope="session")
def precompute_params():
    """Read-only: copy before changing (``dict(precompute_params, key=value)``)."""
    return precompute_params_dict()


def copy_project(root: Path) -> Path:
    """pyproject, telemetry consent, conf (without local/) and notebooks copied to ``root``, with an empty src: the
    package itself is the installed one. Data and MLflow tracking written by runs there stay there."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(PROJECT_ROOT / name, root / name)
    shutil.copytree(PROJECT_ROOT / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    shutil.copytree(PROJECT_ROOT / "notebooks", root / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    (root / "src").mkdir()
    return root


def end_mlflow_runs() -> None:
    """One process drives several sessions in the suite; the CLI's one run per process never leaves a run open."""
    import mlflow

    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture(scope="session")
def tiny_run_params() -> dict:
    """The runtime parameters of the shared demo run (a copy: change it freely)."""
    return copy.deepcopy(TINY_RUN)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A scratch copy of the project, bootstrapped and the working directory, with no PSS_* overrides set."""
    copy_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    for name in PSS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    bootstrap_project(tmp_path)
    yield tmp_path
    end_mlflow_runs()


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """A scratch copy of the project after one ``kedro run --env demo`` of every pipeline with ``TINY_RUN``.

    Shared by every test that reads the outputs of a whole run: treat it as read-only, and copy it
    (``shutil.copytree``) before running anything more in it.
    """
    root = copy_project(tmp_path_factory.mktemp("demo_run") / "project")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        for name in PSS_VARIABLES:
            patch.delenv(name, raising=False)
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        bootstrap_project(root)
        try:
            with KedroSession.create(project_path=root, env="demo", runtime_params=copy.deepcopy(TINY_RUN)) as session:
                session.run()
        finally:
            end_mlflow_runs()
    return root
