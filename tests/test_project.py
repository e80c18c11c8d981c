"""The project as a user drives it: Kedro session runs, registry, catalog construction from the real conf."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import MemoryDataset
from kedro_datasets.json import JSONDataset
from kedro_datasets.matplotlib import MatplotlibDataset
from kedro_datasets.pandas import CSVDataset, ParquetDataset
from kedro_mlflow.io.metrics import MlflowMetricsHistoryDataset


def test_registry_lists_every_pipeline(project):
    from multimodal_suite.pipeline_registry import register_pipelines

    pipelines = register_pipelines()
    assert {"demo_data", "pss_precompute", "pss_train", "pss_classify", "pss", "tagging_source", "tagging_index",
            "tagging_target", "tagging_retag", "tagging", "tagging_evaluate", "__default__"} <= set(pipelines)
    default_nodes = {node.name for node in pipelines["__default__"].nodes}
    for name, pipeline in pipelines.items():
        assert {node.name for node in pipeline.nodes} <= default_nodes, name


# name -> (dataset class, file under the project, MLflow artifact folder) where a factory of conf/base/catalog.yml
# or an explicit entry that wins over one decides
REPORTS = {
    "pss_rejects": (ParquetDataset, "data/08_reporting/pss/rejects.parquet", None),
    "pss_listing_rejects": (ParquetDataset, "data/08_reporting/pss/listing_rejects.parquet", None),
    "pss_annotation_rejects": (ParquetDataset, "data/08_reporting/pss/annotation_rejects.parquet", None),
    "tagging_rejects": (ParquetDataset, "data/08_reporting/tagging/rejects.parquet", None),
    "tagging_target_rejects": (ParquetDataset, "data/07_model_output/tagging/target/00290/rejects.parquet", None),
    "bookbert_training_history": (ParquetDataset, "data/08_reporting/bookbert/training_history.parquet", None),
    "bookbert_loss_curve": (MatplotlibDataset, "data/08_reporting/bookbert/loss_curve.png", "bookbert"),
    "pss_confusion_matrix": (MatplotlibDataset, "data/08_reporting/pss/confusion_matrix.png", "pss"),
    "pss_book_strips": (MatplotlibDataset, "data/08_reporting/pss/book_strips.png", "pss"),
    "pss_evaluation": (JSONDataset, "data/08_reporting/pss/evaluation.json", "pss"),
    "pss_per_class_metrics": (CSVDataset, "data/08_reporting/pss/per_class_metrics.csv", None),
}


@pytest.mark.parametrize("env", [None, "demo"])
def test_catalog_resolves_reports_by_factory_and_explicit_entries_win(project, env):
    from multimodal_suite.pipeline_registry import register_pipelines

    used = {name for pipeline in register_pipelines().values() for name in pipeline.datasets()}
    with KedroSession.create(project_path=project, env=env) as session:
        catalog = session.load_context().catalog
    assert set(REPORTS) <= used
    for name, (kind, path, artifact_path) in REPORTS.items():
        dataset = catalog.get(name)
        if artifact_path is not None:  # an MlflowArtifactDataset subclass of the wrapped dataset's class
            assert dataset.artifact_path == artifact_path, name
        assert isinstance(dataset, kind), name
        assert Path(dataset._describe()["filepath"]) == project / path, name
    for name, prefix in (("pss_metrics", "pss"), ("bookbert_training_metrics", "bookbert")):
        assert isinstance(catalog.get(name), MlflowMetricsHistoryDataset) and catalog.get(name)._prefix == prefix
    # the datasets nodes hand over in memory by reference stay MemoryDatasets
    assert isinstance(catalog.get("pss_book_sequences"), MemoryDataset)


@pytest.mark.slow
def test_demo_run_writes_the_pss_outputs(demo_run):
    predictions = pd.read_parquet(demo_run / "data/07_model_output/pss/page_predictions.parquet")
    index = pd.read_parquet(demo_run / "data/04_feature/pss/page_index.parquet")
    assert len(predictions) == len(index) > 0
    evaluation = json.loads((demo_run / "data/08_reporting/pss/evaluation.json").read_text())
    assert {"bookbert", "baseline"} <= set(evaluation)
    rejects = pd.read_parquet(demo_run / "data/08_reporting/pss/rejects.parquet")
    assert {"book_missing", "image_undecodable"} <= set(rejects["reason"])
    history = pd.read_parquet(demo_run / "data/08_reporting/bookbert/training_history.parquet")
    assert "epoch" in history and 0 < len(history) <= 2  # two epochs asked for; early stopping may end sooner
    for plot in ("pss/confusion_matrix.png", "pss/book_strips.png", "bookbert/loss_curve.png"):
        assert (demo_run / "data/08_reporting" / plot).stat().st_size > 1000


@pytest.mark.slow
def test_demo_run_writes_the_tagging_outputs(demo_run):
    target = demo_run / "data/07_model_output/tagging/target/00290"
    tags = json.loads((target / "tags.json").read_text())
    assert sorted(tags) == sorted(p.name for p in (demo_run / "data/01_raw/tagging_target/00290").glob("*.jpg"))
    assert len(list((target / "segmentation/crops").glob("*.png"))) >= len(tags)
    rejects = pd.read_parquet(demo_run / "data/08_reporting/tagging/rejects.parquet")
    assert {"sample_unusable", "tags_missing"} <= set(rejects["reason"])
    evaluation = json.loads((demo_run / "data/08_reporting/tagging/00290_evaluation.json").read_text())
    assert evaluation["images"] == len(tags) and evaluation["recall"] > 0
    assert (demo_run / "data/08_reporting/tagging/00290_contact_sheet.png").stat().st_size > 1000


@pytest.mark.slow
def test_mlflow_records_the_run_with_parameters_metrics_and_artifacts(demo_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{demo_run / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("multimodal_suite")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["demo_data.num_books"] == "6" and run.data.params["pss.train.epochs"] == "2"
    assert any(key.startswith("bookbert.") for key in run.data.metrics)
    assert any(key.startswith("pss.") for key in run.data.metrics)
    logged = {item.path for folder in ("pss", "bookbert", "tagging")
              for item in client.list_artifacts(run.info.run_id, folder)}
    assert {"pss/evaluation.json", "pss/confusion_matrix.png", "pss/book_strips.png", "bookbert/loss_curve.png",
            "tagging/00290_evaluation.json", "tagging/00290_contact_sheet.png"} <= logged


@pytest.mark.slow
def test_rerun_of_precompute_reuses_every_cached_vector(demo_run, tiny_run_params, tmp_path, monkeypatch):
    project = tmp_path / "project"
    shutil.copytree(demo_run, project, ignore=shutil.ignore_patterns("mlflow.db", "mlruns", "mlartifacts"))
    monkeypatch.chdir(project)
    bootstrap_project(project)
    shards = project / "data/04_feature/pss/page_image_embeddings/manifest.json"
    parts_before = json.loads(shards.read_text())["parts"]
    try:
        with KedroSession.create(project_path=project, env="demo", runtime_params=tiny_run_params) as session:
            session.run(pipeline_names=["pss_precompute"])
    finally:
        import mlflow

        while mlflow.active_run():
            mlflow.end_run()
    assert json.loads(shards.read_text())["parts"] == parts_before


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
