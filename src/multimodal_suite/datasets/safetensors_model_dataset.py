"""``SafetensorsModelDataset`` stores trained model weights as safetensors plus a JSON config, each file written
atomically, on any fsspec filesystem.

Layout::

    <filepath>/model.safetensors   the state dict, one tensor per name
    <filepath>/config.json         {"config": {...}, "metadata": {...}}, written last

The dataset stores a plain dict ``{"config": {...}, "state_dict": {name: tensor}, "metadata": {...}}``; the
pipeline rebuilds its module from the config, so loading never runs pickled code.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from copy import deepcopy
from pathlib import PurePosixPath
from typing import Any

import fsspec
import torch
from fsspec.implementations.local import LocalFileSystem
from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path
from safetensors.torch import load as load_safetensors
from safetensors.torch import load_file, save_file

from multimodal_suite.common.atomic import atomic_fs_path, write_json_atomic
from multimodal_suite.common.embeddings import join_path

try:
    from kedro_datasets._typing import JSONPreview
except ImportError:  # kedro-datasets without kedro-viz preview types
    JSONPreview = str  # type: ignore[misc,assignment]

REQUIRED_KEYS = ("config", "state_dict")
_HEADER_SIZE_BYTES = 8  # safetensors files open with the u64 little-endian length of their JSON header


class SafetensorsModelDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    """A model directory: ``model.safetensors`` (weights) and ``config.json`` (config + metadata).

    ``save`` takes ``{"config": {...}, "state_dict": {name: tensor}, "metadata": {...}}`` (``metadata``
    optional) and writes the weights, then the config, each atomically; ``load`` returns the same dict with CPU
    tensors. Loading a directory that holds no model raises a ``DatasetError`` that names the directory and
    what to run to produce it (``producer_pipeline``).

    Example usage for the `YAML API <https://docs.kedro.org/en/stable/catalog-data/data_catalog_yaml_examples/>`_:

    .. code-block:: yaml

        bookbert_model:
          type: multimodal_suite.datasets.SafetensorsModelDataset
          filepath: data/06_models/bookbert
          producer_pipeline: pss_train

    Example usage for the `Python API <https://docs.kedro.org/en/stable/catalog-data/advanced_data_catalog_usage/>`_:

    .. code-block:: pycon

        >>> import tempfile
        >>> import torch
        >>> from multimodal_suite.datasets import SafetensorsModelDataset
        >>>
        >>> directory = tempfile.TemporaryDirectory()
        >>> dataset = SafetensorsModelDataset(filepath=f"{directory.name}/bookbert", producer_pipeline="pss_train")
        >>> dataset.exists()
        False
        >>> dataset.save({"config": {"width": 2}, "state_dict": {"weight": torch.eye(2)}, "metadata": {"epoch": 3}})
        >>> model = dataset.load()
        >>> model["config"], model["metadata"]
        ({'width': 2}, {'epoch': 3})
        >>> model["state_dict"]["weight"].tolist()
        [[1.0, 0.0], [0.0, 1.0]]
        >>> directory.cleanup()
    """

    WEIGHTS_FILE = "model.safetensors"
    CONFIG_FILE = "config.json"

    def __init__(
        self,
        *,
        filepath: str | os.PathLike,
        producer_pipeline: str | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Creates a new instance of ``SafetensorsModelDataset`` for a model directory.

        Args:
            filepath: Directory of the model, optionally prefixed with an fsspec protocol (``s3://``, ...).
            producer_pipeline: The registered pipeline that trains this model (``pss_train``), named in the
                error when the model is missing.
            credentials: Credentials for the filesystem, merged into ``fs_args``.
            fs_args: Extra arguments for the fsspec filesystem constructor.
            metadata: Arbitrary metadata, ignored by Kedro.
        """
        protocol, path = get_protocol_and_path(str(filepath))
        _fs_args = deepcopy(fs_args or {})
        if protocol == "file":
            _fs_args.setdefault("auto_mkdir", True)
        self._protocol = protocol
        self._storage_options = {**deepcopy(credentials or {}), **_fs_args}
        self._fs = fsspec.filesystem(protocol, **self._storage_options)
        self._filepath = PurePosixPath(path)
        self._producer_pipeline = producer_pipeline
        self.metadata = metadata

    def _path(self, name: str) -> str:
        return join_path(str(self._filepath), name)

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": self._filepath,
            "protocol": self._protocol,
            "producer_pipeline": self._producer_pipeline,
        }

    def _exists(self) -> bool:
        self._fs.invalidate_cache(str(self._filepath))
        return bool(self._fs.exists(self._path(self.CONFIG_FILE)) and self._fs.exists(self._path(self.WEIGHTS_FILE)))

    def _missing_message(self) -> str:
        where = f"{self._protocol}://{self._filepath}" if self._protocol != "file" else str(self._filepath)
        if self._producer_pipeline:
            run = f"train it first (kedro run --pipeline {self._producer_pipeline})"
        else:
            run = "run the pipeline that saves this catalog entry first (kedro run --to-outputs=<entry name>)"
        return (
            f"No model at {where} ({self.WEIGHTS_FILE} + {self.CONFIG_FILE}): {run}, or point the entry's "
            f"filepath at a trained model directory"
        )

    def load(self) -> dict[str, Any]:
        """``{"config", "state_dict", "metadata"}`` with CPU tensors."""
        if not self._exists():
            raise DatasetError(self._missing_message())
        info = self._read_config()
        weights = self._path(self.WEIGHTS_FILE)
        if isinstance(self._fs, LocalFileSystem):
            state_dict = load_file(weights)
        else:
            state_dict = load_safetensors(self._fs.cat_file(weights))
        return {"config": info["config"], "state_dict": state_dict, "metadata": info.get("metadata", {})}

    def save(self, data: dict[str, Any]) -> None:
        """Write the weights, then the config, each atomically.

        The old config is removed just before the new weights take its place, so a save that stops between the
        two files leaves no model rather than new weights under an old config.
        """
        if not isinstance(data, Mapping):
            raise DatasetError(
                f"{type(self).__name__} at {self._filepath} saves a model dict; got {type(data).__name__}"
            )
        missing = [key for key in REQUIRED_KEYS if key not in data]
        if missing:
            raise DatasetError(f"model dict for {self._filepath} lacks {missing}; it needs {list(REQUIRED_KEYS)}")
        not_tensors = [name for name, value in data["state_dict"].items() if not isinstance(value, torch.Tensor)]
        if not_tensors:
            raise DatasetError(f"state_dict entries {not_tensors[:5]} for {self._filepath} are not tensors")
        tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in data["state_dict"].items()}
        config = self._path(self.CONFIG_FILE)
        with atomic_fs_path(self._fs, self._path(self.WEIGHTS_FILE)) as tmp:
            save_file(tensors, str(tmp))
            if self._fs.exists(config):
                self._fs.rm(config)
        write_json_atomic(self._fs, config, {"config": data["config"], "metadata": data.get("metadata", {})})

    def preview(self) -> JSONPreview:
        """Config, metadata, tensor and parameter counts (from the safetensors header only), as a JSON string."""
        if not self._exists():
            return JSONPreview(json.dumps({"filepath": str(self._filepath), "exists": False}))
        info = self._read_config()
        shapes = self._tensor_shapes()
        parameters = sum(math.prod(shape) for shape in shapes.values())
        return JSONPreview(json.dumps({"config": info["config"], "metadata": info.get("metadata", {}),
                                       "tensors": len(shapes), "parameters": parameters}, default=str))

    def _read_config(self) -> dict[str, Any]:
        path = self._path(self.CONFIG_FILE)
        info = json.loads(self._fs.cat_file(path))
        if not isinstance(info, dict) or "config" not in info:
            raise DatasetError(f"{path} has no 'config' entry; save the model again with this dataset")
        return info

    def _tensor_shapes(self) -> dict[str, list[int]]:
        # The header names every tensor with its shape; reading it leaves the weights unread.
        with self._fs.open(self._path(self.WEIGHTS_FILE), "rb") as handle:
            size = int.from_bytes(handle.read(_HEADER_SIZE_BYTES), "little")
            header = json.loads(handle.read(size))
        return {name: entry["shape"] for name, entry in header.items() if name != "__metadata__"}
