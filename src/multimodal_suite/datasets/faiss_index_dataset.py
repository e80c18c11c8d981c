"""``FaissIndexDataset`` saves a FAISS index with a JSON sidecar (factory, metric, sizes, search parameters,
measured recall) and its id mapping, and loads it ready to search, on GPUs when there are any.

Layout::

    <filepath>/index.faiss   faiss.write_index of the CPU index
    <filepath>/ids.npy       int64 [ntotal], external id per index row (absent when ids are row numbers)
    <filepath>/index.json    the info dict (+ "ids_file": "ids.npy" or an inline "ids" list), written last
"""
from __future__ import annotations

import json
import logging
import os
from copy import deepcopy
from pathlib import PurePosixPath
from typing import Any

import faiss
import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem
from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path

from multimodal_suite.common.atomic import atomic_fs_path, write_json_atomic
from multimodal_suite.common.embeddings import join_path
from multimodal_suite.common.faiss_index import (
    SEARCH_PARAMS,
    IndexBundle,
    current_search_params,
    describe_index,
    set_search_param,
    to_cpu,
    to_search_device,
)

try:
    from kedro_datasets._typing import JSONPreview
except ImportError:  # kedro-datasets without kedro-viz preview types
    JSONPreview = str  # type: ignore[misc,assignment]

logger = logging.getLogger(__name__)

INDEX_NAME = "index.faiss"
SIDECAR_NAME = "index.json"
IDS_NAME = "ids.npy"
FORMAT_VERSION = 1
_RESERVED_KEYS = ("format_version", "ids", "ids_file")
_PREVIEW_KEYS = ("factory", "metric", "dim", "ntotal", "nprobe", "efSearch", "k", "recall_at_k")


def _jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays turned into plain Python, so the sidecar stays readable JSON."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


class FaissIndexDataset(AbstractDataset[IndexBundle, IndexBundle]):
    """A FAISS index directory: ``index.faiss`` + ``index.json`` sidecar (+ ``ids.npy``).

    ``save`` takes an :class:`~multimodal_suite.common.faiss_index.IndexBundle`, copies a GPU index back to
    the CPU, and writes the index, the ids and then the sidecar, each atomically. ``load`` reads the index,
    restores ``nprobe``/``efSearch`` from the sidecar (``load_args.search_params`` override them), and moves
    it to the GPUs when ``use_gpu`` allows.

    Example usage for the `YAML API <https://docs.kedro.org/en/stable/catalog-data/data_catalog_yaml_examples/>`_:

    .. code-block:: yaml

        tag_index:
          type: multimodal_suite.datasets.FaissIndexDataset
          filepath: data/06_models/tag_index
          load_args:
            use_gpu: auto        # true: require GPUs, false: always CPU
            search_params:
              nprobe: 16         # overrides the value stored in index.json

    Example usage for the `Python API <https://docs.kedro.org/en/stable/catalog-data/advanced_data_catalog_usage/>`_:

    .. code-block:: pycon

        >>> import tempfile
        >>> import faiss
        >>> import numpy as np
        >>> from multimodal_suite.common.faiss_index import IndexBundle
        >>> from multimodal_suite.datasets import FaissIndexDataset
        >>>
        >>> vectors = np.random.default_rng(0).random((100, 8), dtype=np.float32)
        >>> index = faiss.index_factory(8, "Flat", faiss.METRIC_L2)
        >>> index.add(vectors)
        >>> ids = np.arange(1000, 1100, dtype=np.int64)
        >>> scratch = tempfile.TemporaryDirectory()
        >>> dataset = FaissIndexDataset(filepath=f"{scratch.name}/tag_index")
        >>> dataset.save(IndexBundle(index, {"factory": "Flat"}, ids))
        >>> bundle = dataset.load()
        >>> bundle.info["ntotal"], bundle.info["metric"]
        (100, 'l2')
        >>> scores, found = bundle.search(vectors[:1], k=1)
        >>> int(found[0, 0])
        1000
        >>> scratch.cleanup()
    """

    DEFAULT_LOAD_ARGS: dict[str, Any] = {"use_gpu": "auto", "search_params": {}}

    def __init__(  # noqa: PLR0913
        self,
        *,
        filepath: str | os.PathLike,
        load_args: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Creates a new instance of ``FaissIndexDataset`` for an index directory.

        Args:
            filepath: Directory of the index, optionally prefixed with an fsspec protocol (``s3://``, ...).
            load_args: ``use_gpu`` (``auto`` | true | false, default ``auto``) and ``search_params``, a dict
                such as ``{"nprobe": 16}`` applied after the sidecar's values.
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
        self._load_args = {**deepcopy(self.DEFAULT_LOAD_ARGS), **(load_args or {})}
        self.metadata = metadata

    def _path(self, name: str) -> str:
        return join_path(str(self._filepath), name)

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "protocol": self._protocol, "load_args": self._load_args}

    def _exists(self) -> bool:
        self._fs.invalidate_cache(str(self._filepath))
        return bool(self._fs.exists(self._path(SIDECAR_NAME)))

    def load(self) -> IndexBundle:
        """The index with search parameters applied, on the search device, with its info and ids."""
        self._fs.invalidate_cache(str(self._filepath))
        sidecar = self._read_sidecar()
        index = self._read_index()
        ids = self._read_ids(sidecar)
        info = {key: value for key, value in sidecar.items() if key not in _RESERVED_KEYS}

        params = {name: info[name] for name in SEARCH_PARAMS if info.get(name) is not None}
        params.update(self._load_args.get("search_params") or {})
        self._apply_search_params(index, params)
        info.update(params)

        device_index = to_search_device(index, self._load_args.get("use_gpu", "auto"))
        if device_index is not index:
            # cloners copy most parameters, not all; set them again on the device copy to be sure
            self._apply_search_params(device_index, params)
        return IndexBundle(index=device_index, info=info, ids=ids)

    def save(self, data: IndexBundle) -> None:
        """Write the CPU index, then the ids, then the sidecar, each atomically."""
        if not isinstance(data, IndexBundle):
            raise DatasetError(
                f"{type(self).__name__} at {self._filepath} saves IndexBundle objects; got {type(data).__name__}"
            )
        clash = [key for key in _RESERVED_KEYS if key in data.info]
        if clash:
            raise ValueError(f"info keys {clash} are reserved for the sidecar format; rename them")
        index = to_cpu(data.index)
        sidecar: dict[str, Any] = {"format_version": FORMAT_VERSION}
        sidecar.update(current_search_params(index))
        sidecar.update(_jsonable(data.info))
        # sizes and metric come from the index itself, so the sidecar cannot disagree with it
        sidecar.update(describe_index(index))

        with atomic_fs_path(self._fs, self._path(INDEX_NAME)) as tmp:
            faiss.write_index(index, str(tmp))
        if data.ids is not None:
            with atomic_fs_path(self._fs, self._path(IDS_NAME)) as tmp, open(tmp, "wb") as handle:
                np.save(handle, np.asarray(data.ids, dtype=np.int64))
            sidecar["ids_file"] = IDS_NAME
        write_json_atomic(self._fs, self._path(SIDECAR_NAME), sidecar)
        if data.ids is None and self._fs.exists(self._path(IDS_NAME)):
            self._fs.rm(self._path(IDS_NAME))  # ids of an earlier index; the new sidecar no longer names them
        logger.info("%s: saved %s index with %d vectors", self._filepath, sidecar.get("factory", "?"), index.ntotal)

    def preview(self) -> JSONPreview:
        """Factory, metric, sizes, search parameters and recall from the sidecar, as a JSON string."""
        self._fs.invalidate_cache(str(self._filepath))
        if not self._fs.exists(self._path(SIDECAR_NAME)):
            return JSONPreview(json.dumps({}))
        sidecar = self._read_sidecar()
        summary = {key: sidecar[key] for key in _PREVIEW_KEYS if key in sidecar}
        summary["has_ids"] = "ids_file" in sidecar or "ids" in sidecar
        return JSONPreview(json.dumps(summary))

    def _read_sidecar(self) -> dict[str, Any]:
        path = self._path(SIDECAR_NAME)
        sidecar = json.loads(self._fs.cat_file(path))
        version = sidecar.get("format_version", FORMAT_VERSION)
        if version > FORMAT_VERSION:
            raise ValueError(f"{path}: format_version {version} is newer than this code reads ({FORMAT_VERSION})")
        return sidecar

    def _read_index(self) -> faiss.Index:
        path = self._path(INDEX_NAME)
        if isinstance(self._fs, LocalFileSystem):
            return faiss.read_index(path)
        return faiss.deserialize_index(np.frombuffer(self._fs.cat_file(path), dtype=np.uint8))

    def _read_ids(self, sidecar: dict[str, Any]) -> np.ndarray | None:
        if sidecar.get("ids") is not None:
            return np.asarray(sidecar["ids"], dtype=np.int64)
        if sidecar.get("ids_file"):
            with self._fs.open(self._path(sidecar["ids_file"]), "rb") as handle:
                return np.load(handle).astype(np.int64, copy=False)
        return None

    def _apply_search_params(self, index: faiss.Index, params: dict[str, Any]) -> None:
        for name, value in params.items():
            try:
                set_search_param(index, name, value)
            except RuntimeError as exc:
                raise ValueError(
                    f"{self._filepath}: cannot set {name}={value} on a {type(index).__name__} index ({exc}); "
                    f"fix '{name}' in {SIDECAR_NAME} or load_args.search_params"
                ) from exc
