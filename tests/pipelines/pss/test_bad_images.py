"""pss_precompute with decompression-bomb pages among the good ones: the run finishes, each bomb page is a reject
with its reason, every other page is embedded."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from ray import cloudpickle

from multimodal_suite.common.comics.books import PageRef
from multimodal_suite.common.ray_encoding import ImageEncoderActor
from multimodal_suite.datasets import ComicBookFolderDataset, EmbeddingShardDataset
from multimodal_suite.pipelines.demo_data.broken_inputs import (
    decompression_bomb_jpeg,
    decompression_bomb_png,
)
from multimodal_suite.pipelines.demo_data.nodes import generate_comic_books
from multimodal_suite.pipelines.pss import nodes

BOOKS = {"seed": 11, "num_books": 2, "min_pages": 11, "max_pages": 12, "long_book_pages": 0, "unpadded_books": 0,
         "bad_inputs": False}


@pytest.fixture(scope="module")
def bomb_collection(tmp_path_factory):
    """Two books on disk; page 1 of the first is a bomb JPEG, page 4 of the second a bomb PNG (named .jpg)."""
    files, annotations = generate_comic_books(BOOKS)
    book_ids = sorted({name.split("/")[0] for name in files})
    bombs = {(book_ids[0], 1): decompression_bomb_jpeg(), (book_ids[1], 4): decompression_bomb_png()}
    for (book_id, page), data in bombs.items():
        files[f"{book_id}/{page:03d}.jpg"] = data
    root = tmp_path_factory.mktemp("bomb_books") / "comic_books"
    ComicBookFolderDataset(filepath=str(root)).save(files)
    return root, annotations, set(bombs)


def _precompute(root, annotations, params, shard_dir):
    books = ComicBookFolderDataset(filepath=str(root)).load()
    index, listing_rejects = nodes.index_pages(books, annotations, params)
    images = EmbeddingShardDataset(filepath=str(shard_dir))
    for table in nodes.embed_page_images(books, index, images.load(), params):
        images.save(table)
    return index, nodes.report_precompute_rejects(listing_rejects, index, images.load()), images.load()


def test_bomb_pages_are_rejects_and_every_other_page_is_embedded(bomb_collection, precompute_params, tmp_path):
    root, annotations, bombs = bomb_collection
    index, report, shards = _precompute(root, annotations, precompute_params, tmp_path / "images")
    undecodable = report[report["reason"] == "image_undecodable"]
    assert set(undecodable["item"]) == {f"page {page} of book {book}" for book, page in bombs}
    assert undecodable["detail"].str.startswith("image too large").all()
    is_bomb = [(b, int(p)) in bombs for b, p in zip(index["book_id"], index["page_index"])]
    good = index[~np.array(is_bomb)]
    assert len(good) == len(index) - 2
    assert np.all(np.linalg.norm(shards.get(good["image_key"].tolist()), axis=1) > 0)
    assert not shards.get(index.loc[is_bomb, "image_key"].tolist()).any()


def test_the_precompute_pixel_limit_reaches_the_decode(bomb_collection, precompute_params, tmp_path):
    root, annotations, bombs = bomb_collection
    book_id = next(iter(bombs))[0]
    with Image.open(root / book_id / "000.jpg") as page:  # every generated page has the same size
        width, height = page.size
    params = dict(precompute_params, max_image_pixels=width * height - 1)  # every page is one pixel too large
    index, report, _ = _precompute(root, annotations, params, tmp_path / "images")
    undecodable = report[report["reason"] == "image_undecodable"]
    assert len(undecodable) == len(index)
    assert undecodable["detail"].str.contains(f"over the limit of {width * height - 1:,}").sum() == len(index) - 2


def test_page_read_image_reports_a_bomb_as_too_large(bomb_collection, monkeypatch):
    root, _, bombs = bomb_collection
    (book_id, page), *_ = sorted(bombs)
    ref = PageRef(book_id, page, str(root / book_id / f"{page:03d}.jpg"))
    assert ref.read_image() == (None, "image_too_large")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # PIL's guard off: the explicit limit still holds
    assert ref.read_image() == (None, "image_too_large")
    good = PageRef(book_id, 0, str(root / book_id / "000.jpg"))
    image, problem = good.read_image()
    assert problem is None and image.mode == "RGB"
    assert good.read_image(max_pixels=image.width * image.height - 1) == (None, "image_too_large")


def test_the_ray_replica_turns_a_bomb_into_a_failure_row(bomb_collection, precompute_params):
    root, _, bombs = bomb_collection
    book_id = next(book for book, page in bombs if page == 1)
    pages = [PageRef(book_id, page, str(root / book_id / f"{page:03d}.jpg")) for page in range(3)]  # 1: the bomb
    actor = ImageEncoderActor(precompute_params["image_model"], batch_size=4, device="cpu", mixed_precision=False,
                              decode_workers=2, num_threads=None)
    out = actor({"position": np.arange(3), "loader": [cloudpickle.dumps(p.read_image_bytes) for p in pages]})
    assert out["error"][0] == out["error"][2] == "" and out["error"][1].startswith("image too large")
    assert not out["embedding"][1].any() and np.all(np.linalg.norm(out["embedding"][[0, 2]], axis=1) > 0)
    strict = ImageEncoderActor(precompute_params["image_model"], batch_size=4, device="cpu", mixed_precision=False,
                               decode_workers=1, num_threads=None, max_image_pixels=100)
    out = strict({"position": np.arange(1), "loader": [cloudpickle.dumps(pages[0].read_image_bytes)]})
    assert "over the limit of 100" in out["error"][0]
