"""Dataset previews as kedro-viz shows them: the payload, and the preview type it reads off ``preview()``."""
from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pandas as pd
import pytest
from kedro.io.core import AbstractDataset
from kedro_viz.models.flowchart.node_metadata import DataNodeMetadata
from kedro_viz.models.flowchart.nodes import GraphNode
from PIL import Image

from multimodal_suite.common.embeddings import EmbeddingTable
from multimodal_suite.common.faiss_index import IndexBundle
from multimodal_suite.datasets import ComicBookFolderDataset, EmbeddingShardDataset, FaissIndexDataset

PAGE_SIZE = (200, 300)  # width, height of the sample pages; preview tiles keep the 2:3 shape
BLUE = (0, 0, 255)


def viz_preview(dataset: AbstractDataset, preview_args: dict[str, Any] | None = None) -> tuple[Any, str | None]:
    """The (preview, preview_type) kedro-viz serves for ``dataset``, with catalog-style ``preview_args``."""
    if preview_args is not None:
        dataset.metadata = {"kedro-viz": {"layer": "raw", "preview_args": preview_args}}
    node = GraphNode.create_data_node(
        dataset_id="d0", dataset_name="dataset", layer=None, tags=set(), dataset=dataset, modular_pipelines=None
    )
    metadata = DataNodeMetadata(data_node=node)
    return metadata.preview, metadata.preview_type


def png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", PAGE_SIZE, color).save(buffer, format="PNG")
    return buffer.getvalue()


def decode(preview: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(preview, validate=True)))
    assert image.format == "PNG"
    return image.convert("RGB")


def count_pixels(image: Image.Image, color: tuple[int, int, int], tolerance: int = 40) -> int:
    pixels = np.asarray(image, dtype=np.int16)
    return int((np.abs(pixels - np.asarray(color)).max(axis=-1) <= tolerance).sum())


@pytest.fixture
def books_dir(tmp_path: Path) -> Path:
    """Book ``a`` with 3 blue pages, book ``b`` with an undecodable page 0 and a blue page 1, book ``c`` empty."""
    files = {f"a/{index:03d}.png": png(BLUE) for index in range(3)}
    files["b/000.png"] = b"\x89PNG truncated"
    files["b/001.png"] = png(BLUE)
    files["c/000.ocr.json"] = b'{"OCRResult": ""}'
    root = tmp_path / "comic_books"
    ComicBookFolderDataset(filepath=str(root)).save(files)
    return root


def test_comic_books_preview_is_an_image_grid_of_first_pages(books_dir: Path) -> None:
    preview, preview_type = viz_preview(ComicBookFolderDataset(filepath=str(books_dir)))
    assert preview_type == "ImagePreview"
    grid = decode(preview)
    tile_area = 80 * 120  # default thumb_height 120; 200x300 pages shrink to 80x120
    # every readable page among the first ones of the shown books is there, at tile size
    assert count_pixels(grid, BLUE) == pytest.approx(4 * tile_area, rel=0.05)
    # the undecodable page shows as a crossed-out tile, not as an error
    assert count_pixels(grid, (0xC0, 0x39, 0x2B)) > 0


def test_comic_books_preview_args_limit_books_and_pages(books_dir: Path) -> None:
    dataset = ComicBookFolderDataset(filepath=str(books_dir))
    one_book, _ = viz_preview(dataset, {"books": 1, "pages": 2, "thumb_height": 60})
    grid = decode(one_book)
    assert count_pixels(grid, BLUE) == pytest.approx(2 * 40 * 60, rel=0.05)
    assert count_pixels(grid, (0xC0, 0x39, 0x2B)) == 0  # book b is not shown
    everything = decode(dataset.preview(books=10))
    assert everything.width > grid.width  # one column per book
    assert everything.width * everything.height < 1_000_000  # cheap: a small grid, never the full pages


def test_comic_books_preview_of_a_missing_folder_says_so(tmp_path: Path) -> None:
    preview, preview_type = viz_preview(ComicBookFolderDataset(filepath=str(tmp_path / "nothing")))
    assert preview_type == "ImagePreview"
    assert decode(preview).height < 100


def test_embedding_shards_preview_is_a_shard_summary_table(tmp_path: Path) -> None:
    dataset = EmbeddingShardDataset(filepath=str(tmp_path / "shards"))
    rows = pd.DataFrame({"key": [f"k{i}" for i in range(6)], "book_id": "b1", "page_index": range(6)})
    dataset.save(EmbeddingTable(np.ones((6, 4), dtype=np.float32), rows, model_spec_hash="spec"))
    preview, preview_type = viz_preview(dataset, {"nrows": 2})
    assert preview_type == "TablePreview"
    assert preview["columns"] == ["key", "book_id", "page_index"]
    assert preview["data"] == [["k0", "b1", 0], ["k1", "b1", 1]]
    assert (preview["count"], preview["dim"], preview["parts"]) == (6, 4, 1)
    json.dumps(preview)


def test_faiss_index_preview_is_an_index_summary(tmp_path: Path) -> None:
    dataset = FaissIndexDataset(filepath=str(tmp_path / "index"))
    empty, preview_type = viz_preview(dataset)
    assert preview_type == "JSONPreview"
    assert json.loads(empty) == {}
    index = faiss.IndexFlatIP(8)
    index.add(np.eye(8, dtype=np.float32))
    dataset.save(IndexBundle(index, {"factory": "Flat", "k": 1, "recall_at_k": 1.0}))
    preview, _ = viz_preview(dataset)
    summary = json.loads(preview)
    assert summary["factory"] == "Flat" and summary["ntotal"] == 8 and summary["metric"] == "inner_product"
    assert summary["has_ids"] is False
