"""Kedro datasets: one class per module, each owning its on-disk format."""
from multimodal_suite.datasets.comic_books import ComicBookFolderDataset
from multimodal_suite.datasets.embedding_shards import EmbeddingShardDataset
from multimodal_suite.datasets.faiss_index import FaissIndexDataset
from multimodal_suite.datasets.image_folder import ImageFolderDataset
from multimodal_suite.datasets.safetensors_model import SafetensorsModelDataset
from multimodal_suite.datasets.sample_files import SampleFilesDataset
from multimodal_suite.datasets.webdataset_shards import WebDatasetShardsDataset

__all__ = [
    "ComicBookFolderDataset",
    "EmbeddingShardDataset",
    "FaissIndexDataset",
    "ImageFolderDataset",
    "SafetensorsModelDataset",
    "SampleFilesDataset",
    "WebDatasetShardsDataset",
]
