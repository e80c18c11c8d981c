"""Wiring of the pss pipelines: ``pss_precompute``, ``pss_train`` (with evaluation) and ``pss_classify``."""
from kedro.pipeline import Node, Pipeline

from . import nodes


def create_precompute_pipeline(**kwargs) -> Pipeline:
    """Book pages → content-keyed image and text embedding shards (+ rejects report)."""
    return Pipeline([
        Node(nodes.index_pages, inputs=["comic_books", "comic_annotations", "params:pss.precompute"],
             outputs=["pss_page_index", "pss_listing_rejects"], name="index_pages"),
        Node(nodes.embed_page_images,
             inputs=["comic_books", "pss_page_index", "page_image_embeddings_cache", "params:pss.precompute"],
             outputs="page_image_embeddings", name="embed_page_images", tags=["gpu"]),
        Node(nodes.embed_page_texts, inputs=["pss_page_index", "page_text_embeddings_cache", "params:pss.precompute"],
             outputs="page_text_embeddings", name="embed_page_texts", tags=["gpu"]),
        Node(nodes.report_precompute_rejects,
             inputs=["pss_listing_rejects", "pss_page_index", "page_image_embeddings"],
             outputs="pss_rejects", name="report_precompute_rejects"),
    ], tags=["pss", "pss_precompute"])


def _sequences_node() -> Node:
    # In pss_train and pss_classify alike; the same tags in both keep the node the same once they are added.
    return Node(nodes.assemble_book_sequences,
                inputs=["pss_page_index", "page_image_embeddings", "page_text_embeddings"],
                outputs="pss_book_sequences", name="assemble_book_sequences", tags=["pss_train", "pss_classify"])


def create_train_pipeline(**kwargs) -> Pipeline:
    """Labels + cached embeddings → BookBERT and the single-page baseline, both evaluated on the test books."""
    return Pipeline([
        _sequences_node(),
        Node(nodes.build_page_labels, inputs=["comic_annotations", "pss_page_index"],
             outputs=["page_labels", "pss_annotation_rejects"], name="build_page_labels"),
        Node(nodes.split_books, inputs=["page_labels", "params:pss.split"], outputs="pss_book_split",
             name="split_books"),
        Node(nodes.train_bookbert,
             inputs=["pss_book_sequences", "page_labels", "pss_book_split", "page_text_embeddings",
                     "params:pss.model", "params:pss.train"],
             outputs=["bookbert_model", "bookbert_training_history", "bookbert_training_metrics",
                      "bookbert_loss_curve"],
             name="train_bookbert", tags=["gpu"]),
        Node(nodes.train_page_baseline,
             inputs=["pss_book_sequences", "page_labels", "pss_book_split", "params:pss.baseline"],
             outputs="baseline_page_predictions", name="train_page_baseline"),
        Node(nodes.evaluate_pss,
             inputs=["bookbert_model", "pss_book_sequences", "page_labels", "pss_book_split",
                     "baseline_page_predictions", "params:pss.classify"],
             outputs=["pss_evaluation", "pss_per_class_metrics", "pss_confusion_matrix", "pss_book_strips"],
             name="evaluate_pss", tags=["pss_evaluate"]),
        Node(nodes.evaluation_metrics, inputs="pss_evaluation", outputs="pss_metrics", name="log_pss_metrics",
             tags=["pss_evaluate"]),
    ], tags=["pss", "pss_train"])


def create_classify_pipeline(**kwargs) -> Pipeline:
    """Trained BookBERT + cached embeddings → a label and class probabilities for every page of every book."""
    return Pipeline([
        _sequences_node(),
        Node(nodes.classify_books, inputs=["bookbert_model", "pss_book_sequences", "params:pss.classify"],
             outputs=["page_predictions", "book_predictions"], name="classify_books"),
    ], tags=["pss", "pss_classify"])


def create_pipeline(**kwargs) -> Pipeline:
    """All of pss: precompute, train + evaluate, classify."""
    return create_precompute_pipeline() + create_train_pipeline() + create_classify_pipeline()
