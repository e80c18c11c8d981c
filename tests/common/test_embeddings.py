"""EmbeddingShards.missing: which keys still need vectors, on empty, filled and appended stores."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from multimodal_suite.common.embeddings import EmbeddingShards, EmbeddingTable
from multimodal_suite.datasets import EmbeddingShardDataset


def table(keys: list[str], dim: int = 4) -> EmbeddingTable:
    vectors = np.arange(len(keys) * dim, dtype=np.float32).reshape(len(keys), dim)
    return EmbeddingTable(vectors, pd.DataFrame({"key": keys, "page_index": np.arange(len(keys))}))


@pytest.fixture
def dataset(tmp_path: Path) -> EmbeddingShardDataset:
    return EmbeddingShardDataset(filepath=str(tmp_path / "embeddings"), dtype="float32")


def test_an_empty_store_is_missing_every_key_once_in_first_seen_order(dataset: EmbeddingShardDataset) -> None:
    cached = dataset.load()
    # what a node sees before anything was saved: an empty view, not an error
    assert isinstance(cached, EmbeddingShards) and len(cached) == 0 and cached.dim is None
    assert cached.missing(["c", "a", "c", "b", "a"]) == ["c", "a", "b"]
    assert cached.missing([]) == []


def test_a_store_with_only_a_manifest_is_empty_too(dataset: EmbeddingShardDataset) -> None:
    dataset.save(EmbeddingTable.empty(4))
    assert dataset.exists()
    assert dataset.load().missing(["x", "y"]) == ["x", "y"]


def test_stored_keys_are_not_missing(dataset: EmbeddingShardDataset) -> None:
    dataset.save(table(["k1", "k2"]))
    dataset.save(table(["k3"]))  # a second part
    cached = dataset.load()
    assert cached.missing(["k0", "k1", "k3", "k4", "k0", "k2"]) == ["k0", "k4"]
    assert cached.missing(["k1", "k2", "k3"]) == []


@pytest.mark.parametrize(
    "kind",
    [list, tuple, iter, pd.Series, pd.Index, lambda keys: np.asarray(keys, dtype=object),
     lambda keys: pd.Series(keys, dtype="string")],
)
def test_any_iterable_of_keys(dataset: EmbeddingShardDataset, kind) -> None:
    dataset.save(table(["k1", "k2"]))
    assert dataset.load().missing(kind(["k2", "k9", "k1", "k8", "k9"])) == ["k9", "k8"]


def test_missing_matches_membership_on_many_keys(dataset: EmbeddingShardDataset) -> None:
    stored = [f"key-{i:06d}" for i in range(0, 20_000, 2)]
    dataset.save(table(stored, dim=2))
    cached = dataset.load()
    rng = np.random.default_rng(0)
    asked = [f"key-{i:06d}" for i in rng.integers(0, 25_000, size=30_000)]
    expected = list(dict.fromkeys(key for key in asked if key not in cached.keys))
    assert cached.missing(pd.Series(asked)) == expected
    assert all(int(key[4:]) % 2 or int(key[4:]) >= 20_000 for key in expected)


def test_node_pattern_keeps_the_first_row_of_each_missing_key(dataset: EmbeddingShardDataset) -> None:
    dataset.save(table(["a"]))
    index = pd.DataFrame({"image_key": ["a", "b", "b", "c"], "page_index": [0, 1, 2, 3]})
    unique = index.drop_duplicates("image_key")
    todo = unique[unique["image_key"].isin(dataset.load().missing(unique["image_key"]))]
    assert todo["page_index"].tolist() == [1, 3]
