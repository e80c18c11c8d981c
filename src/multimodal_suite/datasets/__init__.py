"""Kedro datasets: one class per module, each owning its on-disk format."""
from multimodal_suite.datasets.comic_books_dataset import ComicBookFolderDataset
from multimodal_suite.datasets.embedding_shard_dataset import EmbeddingShardDataset
from multimodal_suite.datasets.faiss_index_dataset import FaissIndexDataset
from multimodal_suite.datasets.image_folder_dataset import ImageFolderDataset
from multimodal_suite.datasets.safetensors_model_dataset import SafetensorsModelDataset
from multimodal_suite.datasets.sample_files_dataset import SampleFilesDataset
from multimodal_suite.datasets.webdataset_shards_dataset import WebDatasetShardsDataset

__all__ = [
    "ComicBookFolderDataset",
    "EmbeddingShardDataset",
    "FaissIndexDataset",
    "ImageFolderDataset",
    "SafetensorsModelDataset",
    "SampleFilesDataset",
    "WebDatasetShardsDataset",
]
