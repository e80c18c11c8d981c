"""``EmbeddingShardDataset`` stores embedding vectors as an append-only directory of safetensors + parquet
parts with a manifest, and loads them as a lazy, memory-mapped :class:`EmbeddingShards` view.

Layout::

    <filepath>/part-00000.safetensors   tensor "embeddings" [n, d] in float16 or float32
    <filepath>/part-00000.parquet       n rows: "key" (content hash) + ids/metadata
    <filepath>/manifest.json            format_version, dim, dtype, model_spec_hashes, parts, count

Every file is written to a temporary sibling and renamed into place, and the manifest is written last, so a
run that stops part-way keeps every part it finished and readers never see a half-written part.

Several processes may append to one store at once. Each save holds ``<filepath>/.manifest.lock``
(:class:`~multimodal_suite.common.locks.FileLock`) from reading the manifest through choosing the part number,
writing the part and replacing the manifest, so no writer reads a manifest that another is about to replace,
and no two writers pick the same part number. One lock, rather than a manifest per part merged on read, keeps
the layout a reader needs unchanged: one manifest, replaced in one step (a rename locally, a single put on an
object store), so a reader takes no lock, lists no directory and sees a part either fully listed or not at all.
The lock only needs an exclusive create, which local disks, NFS and object stores with conditional writes
offer; a writer that died holding it is detected (dead pid on this host, or older than the stale timeout) and
its lock broken by the next save, which also removes the temporary files such a writer left behind.
"""
from __future__ import annotations

import logging
import os
from copy import deepcopy
from pathlib import PurePosixPath
from typing import Any

import fsspec
import numpy as np
import pyarrow.parquet as pq
from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path
from safetensors.numpy import save_file

from multimodal_suite.common.atomic import atomic_fs_path, remove_stale_temporaries, write_json_atomic
from multimodal_suite.common.embeddings import (
    FORMAT_VERSION,
    KEY_COLUMN,
    MANIFEST_NAME,
    STORAGE_DTYPES,
    TENSOR_NAME,
    EmbeddingShards,
    EmbeddingTable,
    existing_part_numbers,
    join_path,
    part_name,
    read_manifest,
    read_part_rows,
)
from multimodal_suite.common.locks import FileLock

try:
    from kedro_datasets._typing import TablePreview
except ImportError:  # kedro-datasets without kedro-viz preview types
    TablePreview = dict  # type: ignore[misc,assignment]

logger = logging.getLogger(__name__)

LOCK_NAME = ".manifest.lock"


class EmbeddingShardDataset(AbstractDataset[EmbeddingTable, EmbeddingShards]):
    """Append-only embedding store: ``save`` adds a part, ``load`` returns a lazy :class:`EmbeddingShards`.

    ``save(table)`` appends the table as a new part, skipping keys that are already stored, so a generator node
    that yields several tables writes several parts, and a rerun only needs to embed the keys it does not find
    in ``load().keys``. Saving a table of another width than the stored one raises ``ValueError``.

    Example usage for the `YAML API <https://docs.kedro.org/en/stable/catalog-data/data_catalog_yaml_examples/>`_:

    .. code-block:: yaml

        page_embeddings:
          type: multimodal_suite.datasets.EmbeddingShardDataset
          filepath: data/04_feature/page_embeddings
          dtype: float16

    Example usage for the `Python API <https://docs.kedro.org/en/stable/catalog-data/advanced_data_catalog_usage/>`_:

    .. code-block:: pycon

        >>> import tempfile
        >>> import numpy as np
        >>> import pandas as pd
        >>> from multimodal_suite.common.embeddings import EmbeddingTable
        >>> from multimodal_suite.datasets import EmbeddingShardDataset
        >>>
        >>> scratch = tempfile.TemporaryDirectory()
        >>> dataset = EmbeddingShardDataset(filepath=f"{scratch.name}/page_embeddings")
        >>> rows = pd.DataFrame({"key": ["k0", "k1", "k2"], "book_id": ["b1", "b1", "b2"]})
        >>> dataset.save(EmbeddingTable(np.eye(3, 4, dtype=np.float32), rows))
        >>> shards = dataset.load()
        >>> len(shards), shards.dim, sorted(shards.keys)
        (3, 4, ['k0', 'k1', 'k2'])
        >>> shards.get(["k2", "k0"]).tolist()
        [[0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]]
        >>> shards.select(book_id="b1").rows["key"].tolist()
        ['k0', 'k1']
        >>> scratch.cleanup()
    """

    DEFAULT_LOAD_ARGS: dict[str, Any] = {"mmap": True}
    DEFAULT_SAVE_ARGS: dict[str, Any] = {}

    def __init__(  # noqa: PLR0913
        self,
        *,
        filepath: str | os.PathLike,
        dtype: str = "float16",
        load_args: dict[str, Any] | None = None,
        save_args: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Creates a new instance of ``EmbeddingShardDataset`` for a shard directory.

        Args:
            filepath: Directory of the shards, optionally prefixed with an fsspec protocol (``s3://``, ...).
            dtype: Storage dtype of new vectors, ``float16`` or ``float32``. A directory keeps the dtype it
                was created with. Loaded vectors are always float32.
            load_args: ``mmap`` (default True): memory-map local parts instead of reading them into memory.
            save_args: Passed to ``pandas.DataFrame.to_parquet`` for the row files (e.g. ``compression``).
            credentials: Credentials for the filesystem, merged into ``fs_args``.
            fs_args: Extra arguments for the fsspec filesystem constructor.
            metadata: Arbitrary metadata, ignored by Kedro.
        """
        if dtype not in STORAGE_DTYPES:
            raise ValueError(f"dtype must be one of {sorted(STORAGE_DTYPES)}; got {dtype!r}")
        protocol, path = get_protocol_and_path(str(filepath))
        _fs_args = deepcopy(fs_args or {})
        if protocol == "file":
            _fs_args.setdefault("auto_mkdir", True)
        self._protocol = protocol
        self._storage_options = {**deepcopy(credentials or {}), **_fs_args}
        self._fs = fsspec.filesystem(protocol, **self._storage_options)
        self._filepath = PurePosixPath(path)
        self._dtype = dtype
        self._load_args = {**self.DEFAULT_LOAD_ARGS, **(load_args or {})}
        self._save_args = {**self.DEFAULT_SAVE_ARGS, **(save_args or {})}
        self._save_args.pop("index", None)  # rows are positional; a pandas index column would be noise
        self.metadata = metadata
        # keys of parts already listed in the manifest, so appending a part does not re-read every part
        self._stored_keys: set[str] = set()
        self._stored_key_parts: set[str] = set()
        self._warned_dtype = False
        self._reported_orphans: set[int] = set()

    @property
    def _dir(self) -> str:
        return str(self._filepath)

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": self._filepath,
            "protocol": self._protocol,
            "dtype": self._dtype,
            "load_args": self._load_args,
            "save_args": self._save_args,
        }

    def _exists(self) -> bool:
        self._fs.invalidate_cache(self._dir)
        return bool(self._fs.exists(join_path(self._dir, MANIFEST_NAME)))

    def load(self) -> EmbeddingShards:
        """A lazy view of every part listed in the manifest; empty when nothing was saved yet."""
        self._fs.invalidate_cache(self._dir)
        return EmbeddingShards.open(self._dir, fs=self._fs, mmap=bool(self._load_args.get("mmap", True)))

    def save(self, data: EmbeddingTable) -> None:
        """Append ``data`` as a new part (keys already stored are dropped); a 0-row table only creates the
        manifest when there is none yet. Waits while another process appends to the same store."""
        if not isinstance(data, EmbeddingTable):
            raise DatasetError(
                f"{type(self).__name__} at {self._dir} saves EmbeddingTable objects; got {type(data).__name__}"
            )
        with FileLock(self._fs, join_path(self._dir, LOCK_NAME)) as lock:
            remove_stale_temporaries(self._fs, self._dir)
            self._append(data, lock)

    def _append(self, data: EmbeddingTable, lock: FileLock) -> None:
        # under the lock: the manifest read here is the one this save replaces
        self._fs.invalidate_cache(self._dir)
        manifest = read_manifest(self._fs, self._dir)
        is_new = manifest is None
        if manifest is None:
            manifest = self._new_manifest()
        self._check_dim(manifest, data)
        if manifest["dim"] is None and data.dim > 0:
            manifest["dim"] = data.dim

        data = self._drop_stored_keys(manifest, data)
        if len(data) == 0:
            if is_new:
                lock.check()
                self._write_manifest(manifest)
            return

        dtype = manifest["dtype"]
        if dtype != self._dtype and not self._warned_dtype:
            logger.warning(
                "%s stores %s vectors; appending in %s, not the configured %s", self._dir, dtype, dtype, self._dtype
            )
            self._warned_dtype = True
        vectors = self._to_storage(data.embeddings, dtype)
        name = part_name(self._next_part_number(manifest))
        metadata = {"format": "multimodal_suite.embedding_shards", "format_version": str(FORMAT_VERSION)}
        if data.model_spec_hash:
            metadata["model_spec_hash"] = data.model_spec_hash

        # part files first, manifest last: a crash in between leaves unlisted files that readers ignore
        with atomic_fs_path(self._fs, join_path(self._dir, f"{name}.safetensors")) as tmp:
            save_file({TENSOR_NAME: vectors}, str(tmp), metadata=metadata)
        with atomic_fs_path(self._fs, join_path(self._dir, f"{name}.parquet")) as tmp:
            data.rows.to_parquet(tmp, index=False, **self._save_args)

        manifest["parts"].append(
            {"name": name, "rows": len(data), "dtype": dtype, "model_spec_hash": data.model_spec_hash}
        )
        manifest["count"] = int(manifest["count"]) + len(data)
        if data.model_spec_hash and data.model_spec_hash not in manifest["model_spec_hashes"]:
            manifest["model_spec_hashes"].append(data.model_spec_hash)
        lock.check()  # a writer whose lock was broken as stale must not replace the new holder's manifest
        self._write_manifest(manifest)

        self._stored_keys.update(data.rows[KEY_COLUMN])
        self._stored_key_parts.add(name)
        logger.info("%s: appended %s with %d vectors (total %d)", self._dir, name, len(data), manifest["count"])

    def preview(self, nrows: int = 5) -> TablePreview:
        """The first ``nrows`` rows in pandas ``split`` form, plus ``count``, ``dim``, ``dtype``, ``parts``."""
        self._fs.invalidate_cache(self._dir)
        manifest = read_manifest(self._fs, self._dir) or self._new_manifest()
        parts = manifest["parts"]
        columns: list[str] = [KEY_COLUMN]
        records: list[list[Any]] = []
        if parts:
            path = join_path(self._dir, f"{parts[0]['name']}.parquet")
            with self._fs.open(path, "rb") as handle:
                first = pq.ParquetFile(handle)
                columns = list(first.schema_arrow.names)
                batch = next(first.iter_batches(batch_size=max(nrows, 1)), None)
                if batch is not None:
                    records = batch.to_pandas().head(nrows).astype(object).values.tolist()
        preview = {
            "columns": columns,
            "index": list(range(len(records))),
            "data": records,
            "count": int(manifest["count"]),
            "dim": manifest["dim"],
            "dtype": manifest["dtype"],
            "parts": len(parts),
            "model_spec_hashes": list(manifest["model_spec_hashes"]),
        }
        return TablePreview(preview)

    def _new_manifest(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "dim": None,
            "dtype": self._dtype,
            "model_spec_hashes": [],
            "parts": [],
            "count": 0,
        }

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        write_json_atomic(self._fs, join_path(self._dir, MANIFEST_NAME), manifest)

    def _check_dim(self, manifest: dict[str, Any], data: EmbeddingTable) -> None:
        expected = manifest["dim"]
        if expected is None or (len(data) == 0 and data.dim == 0):
            return
        if data.dim != expected:
            raise ValueError(
                f"{self._dir} holds {expected}-dim embeddings; cannot append {len(data)} vectors of dim {data.dim}. "
                "Save vectors of another model to a different filepath."
            )

    def _drop_stored_keys(self, manifest: dict[str, Any], data: EmbeddingTable) -> EmbeddingTable:
        listed = [part["name"] for part in manifest["parts"]]
        if not self._stored_key_parts <= set(listed):
            # the directory was replaced or cleaned since this instance last looked at it
            self._stored_keys, self._stored_key_parts = set(), set()
        for name in listed:
            if name not in self._stored_key_parts:
                keys = read_part_rows(self._fs, self._dir, name, columns=[KEY_COLUMN])[KEY_COLUMN]
                self._stored_keys.update(keys)
                self._stored_key_parts.add(name)
        if not self._stored_keys or len(data) == 0:
            return data
        # a set lookup per key: Series.isin copies the whole stored set into an array on every call
        stored = np.fromiter((key in self._stored_keys for key in data.rows[KEY_COLUMN]), dtype=bool, count=len(data))
        if stored.any():
            logger.info(
                "%s: %d of %d keys already stored; appending the other %d",
                self._dir, int(stored.sum()), len(data), int((~stored).sum()),
            )
            data = data.take(~stored)
        return data

    def _next_part_number(self, manifest: dict[str, Any]) -> int:
        listed = {int(part["name"].rsplit("-", 1)[1]) for part in manifest["parts"]}
        on_disk = set(existing_part_numbers(self._fs, self._dir))
        orphans = on_disk - listed - self._reported_orphans
        if orphans:
            logger.warning(
                "%s: ignoring %d part file number(s) not in the manifest (an earlier save stopped early): %s",
                self._dir, len(orphans), [part_name(n) for n in sorted(orphans)][:5],
            )
            self._reported_orphans |= orphans
        # past every file on disk, so an orphan is never overwritten and never mistaken for a listed part
        return max(listed | on_disk, default=-1) + 1

    def _to_storage(self, embeddings: np.ndarray, dtype: str) -> np.ndarray:
        with np.errstate(over="ignore"):  # overflow is checked and reported below
            vectors = np.ascontiguousarray(embeddings, dtype=STORAGE_DTYPES[dtype])
        if dtype == "float16" and not np.isfinite(vectors).all() and np.isfinite(embeddings).all():
            raise ValueError(
                f"{self._dir}: values up to {float(np.abs(embeddings).max()):.3g} overflow float16; "
                "normalise the vectors or set dtype: float32"
            )
        return vectors
