"""Kedro datasets: one class per module, each owning its on-disk format."""
from multimodal_suite.datasets.embedding_shards import EmbeddingShardDataset
from multimodal_suite.datasets.faiss_index import FaissIndexDataset

__all__ = ["EmbeddingShardDataset", "FaissIndexDataset"]
