"""``SafetensorsModelDataset``: model weights as safetensors plus a JSON config, saved atomically.

The dataset stores a plain dict ``{"config": {...}, "state_dict": {name: tensor}, "metadata": {...}}``; the
pipeline rebuilds its module from the config, so no pickled code is ever loaded.
"""
from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

import fsspec
from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path
from safetensors.torch import load_file, save_file

from multimodal_suite.common.atomic import atomic_path, atomic_write_json


class SafetensorsModelDataset(AbstractDataset[dict[str, Any], dict[str, Any]]):
    """A directory with ``model.safetensors`` (weights) and ``config.json`` (config + metadata).

    Example catalog entry:

    .. code-block:: yaml

        bookbert_model:
          type: multimodal_suite.datasets.SafetensorsModelDataset
          filepath: data/06_models/bookbert

    Example usage:

    .. code-block:: python

        >>> import torch, tempfile
        >>> from multimodal_suite.datasets import SafetensorsModelDataset
        >>> dataset = SafetensorsModelDataset(filepath=tempfile.mkdtemp() + "/model")
        >>> dataset.save({"config": {"width": 2}, "state_dict": {"w": torch.ones(2)}, "metadata": {}})
        >>> dataset.load()["config"]
        {'width': 2}
    """

    WEIGHTS_FILE = "model.safetensors"
    CONFIG_FILE = "config.json"

    def __init__(self, *, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        protocol, path = get_protocol_and_path(filepath)
        if protocol != "file":
            raise DatasetError(f"SafetensorsModelDataset writes local directories only, got {filepath!r}")
        self._filepath = PurePosixPath(path)
        self._fs = fsspec.filesystem(protocol)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}

    def _exists(self) -> bool:
        return self._fs.exists(str(self._filepath / self.WEIGHTS_FILE)) and self._fs.exists(
            str(self._filepath / self.CONFIG_FILE)
        )

    def load(self) -> dict[str, Any]:
        if not self._exists():
            raise DatasetError(
                f"No model at {self._filepath}: train it first (kedro run --pipeline pss_train) or point the "
                f"catalog entry (PSS_CLASSIFIER_CKPT for BookBERT) at a trained model directory"
            )
        with open(self._filepath / self.CONFIG_FILE, encoding="utf-8") as handle:
            info = json.load(handle)
        state_dict = load_file(str(self._filepath / self.WEIGHTS_FILE))
        return {"config": info["config"], "state_dict": state_dict, "metadata": info.get("metadata", {})}

    def save(self, data: dict[str, Any]) -> None:
        missing = {"config", "state_dict"} - set(data)
        if missing:
            raise DatasetError(f"model dict for {self._filepath} lacks {sorted(missing)}")
        tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in data["state_dict"].items()}
        with atomic_path(self._filepath / self.WEIGHTS_FILE) as tmp:
            save_file(tensors, str(tmp))
        # Config last: a directory with a config always has the weights that belong to it.
        atomic_write_json(self._filepath / self.CONFIG_FILE,
                          {"config": data["config"], "metadata": data.get("metadata", {})})

    def preview(self) -> dict[str, Any]:
        """Config and parameter count, for kedro-viz."""
        if not self._exists():
            return {"filepath": str(self._filepath), "exists": False}
        with open(self._filepath / self.CONFIG_FILE, encoding="utf-8") as handle:
            info = json.load(handle)
        return {"config": info["config"], "metadata": info.get("metadata", {})}

