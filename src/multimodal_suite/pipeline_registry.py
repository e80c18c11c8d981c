"""Project pipelines: the names users type after ``kedro run --pipeline``."""
from __future__ import annotations

from kedro.pipeline import Pipeline

from multimodal_suite.pipelines import demo_data, pss


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    ``__default__`` runs everything in dependency order: the sample data generator first (its outputs are the
    raw inputs of the systems), then every system.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    pss_precompute = pss.pipeline.create_precompute_pipeline()
    pss_train = pss.pipeline.create_train_pipeline()
    pss_classify = pss.pipeline.create_classify_pipeline()
    pipelines: dict[str, Pipeline] = {
        "demo_data": demo_data.create_pipeline(),
        "pss_precompute": pss_precompute,
        "pss_train": pss_train,
        "pss_classify": pss_classify,
        "pss": pss_precompute + pss_train + pss_classify,
    }
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
