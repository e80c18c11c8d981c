"""Wiring of the tagging pipelines: ``tagging_source``, ``tagging_index``, ``tagging_target`` (+ ``tagging_retag``
and the demo-only ``tagging_evaluate``)."""
from kedro.pipeline import Node, Pipeline

from . import nodes


def create_source_pipeline(**kwargs) -> Pipeline:
    """Tagged webdataset shards → crop embeddings (segment → crop in memory → embed), id → tags map, rejects."""
    return Pipeline([
        Node(nodes.embed_source_crops,
             inputs=["tagging_source_shards@webdataset", "source_crop_embeddings_cache", "params:tagging.models",
                     "params:tagging.batching", "params:tagging.source"],
             outputs="source_crop_embeddings", name="embed_source_crops", tags=["gpu"]),
        Node(nodes.map_ids_to_tags, inputs="source_crop_embeddings", outputs="tagging_id_to_tags",
             name="map_ids_to_tags"),
        Node(nodes.report_source_rejects, inputs="source_crop_embeddings", outputs="tagging_rejects",
             name="report_source_rejects"),
    ], tags=["tagging", "tagging_source"])


def create_index_pipeline(**kwargs) -> Pipeline:
    """Source crop embeddings → FAISS tag index tuned to a target recall, a linear probe per tag, and per-tag
    thresholds of every method calibrated on held-out source images."""
    return Pipeline([
        Node(nodes.build_tag_index,
             inputs=["source_crop_embeddings", "params:tagging.index", "params:tagging.batching"],
             outputs="tag_index", name="build_tag_index"),
        Node(nodes.train_tag_probe, inputs=["source_crop_embeddings", "params:tagging.index"],
             outputs="tag_probe", name="train_tag_probe", tags=["gpu"]),
        Node(nodes.calibrate_tag_thresholds,
             inputs=["tag_index", "source_crop_embeddings", "tagging_id_to_tags", "params:tagging.index",
                     "params:tagging.target", "params:tagging.batching"],
             outputs="tagging_vote_thresholds", name="calibrate_tag_thresholds", tags=["gpu"]),
    ], tags=["tagging", "tagging_index"])


def _tag_node() -> Node:
    return Node(nodes.tag_target_images,
                inputs=["tag_index", "tagging_id_to_tags", "tag_probe", "tagging_vote_thresholds",
                        "target_crop_embeddings", "target_crop_table", "tagging_target_crops",
                        "params:tagging.batching", "params:tagging.target"],
                outputs=["target_tag_table", "target_tags", "target_contact_sheet", "target_tag_scores"],
                name="tag_target_images")


def create_target_pipeline(**kwargs) -> Pipeline:
    """One target folder (``tagging.target.folder``) → saved crops → embeddings → tags by
    ``tagging.target.method`` (kNN vote, probe or both, with calibrated per-tag thresholds)."""
    return Pipeline([
        Node(nodes.segment_target_images,
             inputs=["tagging_target_images@folder", "params:tagging.models", "params:tagging.batching",
                     "params:tagging.target"],
             outputs=["tagging_target_crops", "target_crop_table", "tagging_target_rejects"],
             name="segment_target_images", tags=["gpu"]),
        Node(nodes.embed_target_crops,
             inputs=["tagging_target_crops", "target_crop_table", "target_crop_embeddings_cache",
                     "params:tagging.models", "params:tagging.batching", "params:tagging.target"],
             outputs="target_crop_embeddings", name="embed_target_crops", tags=["gpu"]),
        _tag_node(),
    ], tags=["tagging", "tagging_target"])


def create_retag_pipeline(**kwargs) -> Pipeline:
    """Re-tag a folder from its saved crops and embeddings (another ``method``, a new index, probe or thresholds),
    without re-segmenting."""
    # Tagged as in tagging_target: the node is the same node in both, once the pipelines are added.
    return Pipeline([_tag_node()], tags=["tagging", "tagging_target"])


def create_evaluate_pipeline(**kwargs) -> Pipeline:
    """Every method's tags of the folder vs its true tags (the generated demo collections have them): overall and
    per-tag precision/recall/F1, MLflow metrics and a per-tag F1 plot."""
    return Pipeline([
        Node(nodes.evaluate_target_tags,
             inputs=["target_tag_scores", "tagging_target_truth", "params:tagging.target"],
             outputs=["tagging_evaluation", "tagging_per_tag_metrics", "tagging_per_tag_f1"],
             name="evaluate_target_tags"),
        Node(nodes.evaluation_metrics, inputs="tagging_evaluation", outputs="tagging_metrics",
             name="log_tagging_metrics"),
    ], tags=["tagging", "tagging_evaluate"])


def create_pipeline(**kwargs) -> Pipeline:
    """Source, index and target."""
    return create_source_pipeline() + create_index_pipeline() + create_target_pipeline()
