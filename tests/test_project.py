"""The project as a user drives it: Kedro session runs, registry, catalog construction from the real conf."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

PROJECT_ROOT = Path(__file__).resolve().parents[1]
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


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A copy of the project's configuration in a scratch directory (data and tracking stay there)."""
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(PROJECT_ROOT / name, tmp_path / name)
    shutil.copytree(PROJECT_ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local"))
    (tmp_path / "conf" / "local").mkdir()
    (tmp_path / "src").mkdir()  # the package itself is the installed one
    monkeypatch.chdir(tmp_path)
    for name in ("PSS_ROOT", "PSS_DATA", "PSS_PRECOMPUTE", "PSS_CHECKPOINTS", "PSS_OUTPUT", "PSS_CLASSIFIER_CKPT"):
        monkeypatch.delenv(name, raising=False)
    bootstrap_project(tmp_path)
    yield tmp_path
    # One process drives several sessions here; the CLI's one-run-per-process never leaves a run open.
    import mlflow

    while mlflow.active_run():
        mlflow.end_run()


def test_registry_lists_every_pipeline(project):
    from multimodal_suite.pipeline_registry import register_pipelines

    pipelines = register_pipelines()
    assert {"demo_data", "pss_precompute", "pss_train", "pss_classify", "pss", "tagging_source", "tagging_index",
            "tagging_target", "tagging_retag", "tagging", "tagging_evaluate", "__default__"} <= set(pipelines)
    default_nodes = {node.name for node in pipelines["__default__"].nodes}
    for name, pipeline in pipelines.items():
        assert {node.name for node in pipeline.nodes} <= default_nodes, name


def test_default_demo_run_end_to_end(project):
    with KedroSession.create(project_path=project, env="demo", runtime_params=TINY_RUN) as session:
        session.run()
    predictions = pd.read_parquet(project / "data/07_model_output/pss/page_predictions.parquet")
    index = pd.read_parquet(project / "data/04_feature/pss/page_index.parquet")
    assert len(predictions) == len(index) > 0
    evaluation = json.loads((project / "data/08_reporting/pss/evaluation.json").read_text())
    assert {"bookbert", "baseline"} <= set(evaluation)
    rejects = pd.read_parquet(project / "data/08_reporting/pss/pss_rejects.parquet")
    assert {"book_missing", "image_undecodable"} <= set(rejects["reason"])
    for plot in ("confusion_matrix.png", "book_strips.png", "bookbert_loss_curve.png"):
        assert (project / "data/08_reporting/pss" / plot).stat().st_size > 1000
    assert (project / "mlflow.db").exists()
    target = project / "data/07_model_output/tagging/target/00290"
    tags = json.loads((target / "tags.json").read_text())
    assert sorted(tags) == sorted(p.name for p in (project / "data/01_raw/tagging_target/00290").glob("*.jpg"))
    assert len(list((target / "segmentation/crops").glob("*.png"))) >= len(tags)
    tagging_rejects = pd.read_parquet(project / "data/08_reporting/tagging/source_rejects.parquet")
    assert {"sample_unusable", "tags_missing"} <= set(tagging_rejects["reason"])
    evaluation = json.loads((project / "data/08_reporting/tagging/00290_evaluation.json").read_text())
    assert evaluation["images"] == len(tags) and evaluation["recall"] > 0
    assert (project / "data/08_reporting/tagging/00290_contact_sheet.png").stat().st_size > 1000

    # A second run of precompute reuses every cached vector.
    shards = project / "data/04_feature/pss/page_image_embeddings/manifest.json"
    parts_before = json.loads(shards.read_text())["parts"]
    with KedroSession.create(project_path=project, env="demo", runtime_params=TINY_RUN) as session:
        session.run(pipeline_names=["pss_precompute"])
    assert json.loads(shards.read_text())["parts"] == parts_before


def test_mlflow_records_the_run_with_parameters(project):
    import mlflow

    with KedroSession.create(project_path=project, env="demo", runtime_params=TINY_RUN) as session:
        session.run(pipeline_names=["demo_data"])
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["multimodal_suite"])
    assert len(runs) == 1
    assert runs.iloc[0]["params.demo_data.num_books"] == "6"


def test_malformed_environment_value_is_a_clear_error(project, monkeypatch):
    monkeypatch.setenv("PSS_FP16", "maybe")
    with KedroSession.create(project_path=project, env="demo") as session:
        with pytest.raises(Exception, match="PSS_FP16='maybe' is not a boolean"):
            session.load_context().params


def test_environment_overrides_paths_and_settings(project, monkeypatch):
    monkeypatch.setenv("PSS_ROOT", "/data/books")
    monkeypatch.setenv("PSS_PRECOMP_BATCH", "7")
    monkeypatch.setenv("PSS_NUM_LAYERS", "6")
    with KedroSession.create(project_path=project) as session:
        context = session.load_context()
        assert context.params["pss"]["precompute"]["batch_size"] == 7
        assert context.params["pss"]["model"]["num_layers"] == 6
        assert context.params["pss"]["precompute"]["image_model"]["id"] == "google/siglip-so400m-patch14-384"
        assert "/data/books" in str(context.catalog["comic_books"]._describe()["filepath"])
