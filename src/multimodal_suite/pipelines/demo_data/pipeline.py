"""Wiring of the ``demo_data`` pipeline."""
from __future__ import annotations

from typing import Any

from kedro.pipeline import Node, Pipeline

from .nodes import generate_comic_books


def create_pipeline(**kwargs: Any) -> Pipeline:
    """Sample inputs for the demo environment; each generator is one node with its own outputs.

    ``comic_books`` is saved by ``ComicBookFolderDataset`` and ``comic_annotations`` as JSON (see
    ``conf/demo/catalog_demo_data.yml``).
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
        ]
    )
