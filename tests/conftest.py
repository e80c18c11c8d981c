"""Shared fixtures: tiny sample books on disk and tiny model specs (offline, seeded)."""
from __future__ import annotations

import pytest

from multimodal_suite.datasets import ComicBookFolderDataset
from multimodal_suite.pipelines.demo_data.nodes import generate_comic_books

TINY_IMAGE_MODEL = {
    "source": "config",
    "family": "siglip_vision",
    "seed": 0,
    "config": {"image_size": 32, "patch_size": 16, "hidden_size": 32, "intermediate_size": 64,
               "num_hidden_layers": 1, "num_attention_heads": 2},
}
TEXT_MODEL = {"source": "bundled", "name": "all-MiniLM-L6-v2"}
TINY_BOOKS = {"seed": 7, "num_books": 6, "min_pages": 12, "max_pages": 16, "long_book_pages": 0,
              "unpadded_books": 1, "bad_inputs": True}


@pytest.fixture(autouse=True)
def _hub_offline(monkeypatch):
    """Tests never wait on the model hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_collection(tmp_path_factory):
    """Six short sample books (with every kind of bad input) saved on disk, plus their annotations."""
    files, annotations = generate_comic_books(TINY_BOOKS)
    root = tmp_path_factory.mktemp("books") / "comic_books"
    ComicBookFolderDataset(filepath=str(root)).save(files)
    return root, annotations


def precompute_params_dict() -> dict:
    """pss.precompute parameters with the tiny models."""
    return {"book_source": "annotations", "image_model": TINY_IMAGE_MODEL, "text_model": TEXT_MODEL,
            "batch_size": 8, "text_batch_size": 16, "mixed_precision": True, "device": "cpu", "decode_workers": 2,
            "part_size": 20}


@pytest.fixture(scope="session")
def precompute_params():
    """Read-only: copy before changing (``dict(precompute_params, key=value)``)."""
    return precompute_params_dict()
