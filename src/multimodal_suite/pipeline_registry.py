"""Project pipelines: the names users type after ``kedro run --pipeline``."""
from __future__ import annotations

from kedro.pipeline import Pipeline

from multimodal_suite.pipelines import demo_data, pss, tagging


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
        "tagging_source": tagging.pipeline.create_source_pipeline(),
        "tagging_index": tagging.pipeline.create_index_pipeline(),
        "tagging_target": tagging.pipeline.create_target_pipeline(),
        "tagging_retag": tagging.pipeline.create_retag_pipeline(),
    }
    pipelines["tagging"] = tagging.create_pipeline()
    # The evaluation needs true tags, which only the generated demo collections have: it runs in __default__
    # (which generates them) and on its own, not in `tagging`.
    pipelines["tagging_evaluate"] = tagging.pipeline.create_evaluate_pipeline()
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
