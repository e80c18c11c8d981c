"""Project pipelines: the names users type after ``kedro run --pipeline``."""
from __future__ import annotations

from kedro.pipeline import Pipeline

from multimodal_suite.pipelines import demo_data


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    ``__default__`` runs everything in dependency order: sample data (demo env) first, then every system.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    pipelines: dict[str, Pipeline] = {
        "demo_data": demo_data.create_pipeline(),
    }
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
