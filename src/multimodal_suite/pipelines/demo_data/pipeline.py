"""Wiring of the ``demo_data`` pipeline."""
from __future__ import annotations

from typing import Any

from kedro.pipeline import Node, Pipeline

from .nodes import generate_comic_books, generate_tagging_samples


def create_pipeline(**kwargs: Any) -> Pipeline:
    """Sample inputs for the demo environment; each generator is one node with its own outputs.

    ``comic_books`` is saved by ``ComicBookFolderDataset`` and ``comic_annotations`` as JSON (see
    ``conf/demo/catalog_demo_data.yml``). The tagging samples: ``tagging_source_shards@files`` (tar + parquet shards),
    ``tagging_vlm_tag_files`` and ``tagging_target_images@files`` are file dicts saved by ``SampleFilesDataset``
    (transcoded: the tagging pipelines read the same folders as ``@webdataset`` / ``@folder``, so Kedro runs this
    node first), and ``tagging_target_truth`` (true tags per target image) is JSON.
    """
    return Pipeline(
        [
            Node(
                generate_comic_books,
                inputs="params:demo_data",
                outputs=["comic_books", "comic_annotations"],
                name="generate_comic_books",
                tags=["demo_data"],
            ),
            Node(
                generate_tagging_samples,
                inputs="params:demo_data_tagging",
                outputs=[
                    "tagging_source_shards@files",
                    "tagging_vlm_tag_files",
                    "tagging_target_images@files",
                    "tagging_target_truth",
                ],
                name="generate_tagging_samples",
                tags=["demo_data"],
            ),
        ]
    )
