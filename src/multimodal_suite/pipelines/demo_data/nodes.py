"""Nodes of the demo_data pipeline: one per sample collection, each a parameter section in, files out."""
from __future__ import annotations

from typing import Any

from multimodal_suite.common.params import from_params

from . import comic_books, tagging_collections
from .params import DemoBooksConfig, DemoTaggingConfig


def generate_comic_books(params: dict[str, Any]) -> tuple[dict[str, bytes], list[dict[str, Any]]]:
    """Generate the sample comic-book collection and its CoSMo annotations.

    Args:
        params: ``params:demo_data`` (see :class:`~.params.DemoBooksConfig` for keys and defaults).

    Returns:
        ``comic_books``: ``{"<book_id>/<file name>": bytes}`` with ``NNN.jpg``, ``NNN.ocr.json`` and
        ``NNN.panels.json`` per page; ``comic_annotations``: one CoSMo record per book, sorted by book id.
        With ``bad_inputs`` the collection has a zero-byte page, a truncated JPEG, missing/empty/malformed OCR
        sidecars, an annotated book missing from disk, a range past a book's end and a reversed range.

    Raises:
        ParamsError: an unknown key, a value of the wrong type or values that do not fit together.
    """
    return comic_books.generate_collection(from_params(DemoBooksConfig, params, "demo_data"))


def generate_tagging_samples(
    params: dict[str, Any],
) -> tuple[dict[str, bytes], dict[str, bytes], dict[str, bytes], dict[str, dict[str, list[str]]]]:
    """Generate the source and target collections of the tagging pipelines.

    Args:
        params: ``params:demo_data_tagging`` (see :class:`~.params.DemoTaggingConfig` for keys and defaults).

    Returns:
        ``tagging_source_shards@files``: ``{"shard-000000.tar": bytes, "shard-000000.parquet": bytes, …}``, each tar
        holding ``<key>.jpg`` + ``<key>.json`` (``{"key", "width", "height"}``) per sample, each parquet one row
        per sample (key, status, error_message, width, height, original_width, original_height, sha256);
        ``tagging_vlm_tag_files``: ``{"<key>.json": b'{"tags": [...]}'}``, the image-level tags;
        ``tagging_target_images@files``: ``{"<folder>/<folder>_NNN.jpg": bytes}``;
        ``tagging_target_truth``: ``{folder: {image file name: [tags]}}``.
        With ``bad_inputs`` the source has a truncated JPEG, an HTML page in place of an image, a sample without
        a tag file and a tar cut mid-member, and the first target folder has a blank image
        (:func:`~.tagging_collections.bad_input_keys` says where).

    Raises:
        ParamsError: an unknown key, a value of the wrong type or values that do not fit together.
    """
    return tagging_collections.generate_collection(from_params(DemoTaggingConfig, params, "demo_data_tagging"))
