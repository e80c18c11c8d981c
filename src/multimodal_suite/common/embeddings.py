"""Embedding tables in memory, and a lazy, memory-mapped view over an embedding shard directory.

An :class:`EmbeddingTable` is what nodes produce and consume: vectors ``[n, d]`` plus one row of ids and
metadata per vector, each row carrying a ``key`` (the content hash that makes the vector reusable).

An :class:`EmbeddingShards` view reads the directory layout written by
``multimodal_suite.datasets.EmbeddingShardDataset``::

    <dir>/part-00000.safetensors   tensor "embeddings" [n, d], float16 or float32
    <dir>/part-00000.parquet       n rows: "key" + ids/metadata, in vector order
    <dir>/manifest.json            written last; only the parts it lists exist for readers

Only the manifest is read up front; keys, rows and vectors are read from the parts when first asked for.
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem
from pandas.api.types import is_string_dtype
from safetensors.numpy import load as load_safetensors

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
TENSOR_NAME = "embeddings"
KEY_COLUMN = "key"
PART_COLUMN = "_part"
ROW_COLUMN = "_row"
PART_FILE_PATTERN = re.compile(r"^part-(\d{5,})\.(safetensors|parquet)$")
STORAGE_DTYPES: dict[str, type[np.floating]] = {"float16": np.float16, "float32": np.float32}
_SAFETENSORS_DTYPES: dict[str, type[np.floating]] = {"F16": np.float16, "F32": np.float32, "F64": np.float64}


def part_name(number: int) -> str:
    """File stem of part ``number``: ``part-00042``."""
    return f"part-{number:05d}"


def join_path(directory: str, name: str) -> str:
    """Join with ``/`` as fsspec expects on every filesystem."""
    return f"{directory.rstrip('/')}/{name}"


@dataclass
class EmbeddingTable:
    """Vectors and one row of ids/metadata per vector.

    Attributes:
        embeddings: ``[n, d]`` floating-point array.
        rows: ``n`` rows in vector order; column ``key`` (str content hash, unique within the table) is
            required, every other column (``book_id``, ``page_index``, ...) is an id or metadata.
        model_spec_hash: stable hash of the model spec that produced the vectors, when known.
    """

    embeddings: np.ndarray
    rows: pd.DataFrame
    model_spec_hash: str | None = None

    def __post_init__(self) -> None:
        embeddings = np.asarray(self.embeddings)
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must be 2-D [n, d]; got shape {embeddings.shape}")
        if not np.issubdtype(embeddings.dtype, np.floating):
            raise ValueError(f"embeddings must be floating point; got dtype {embeddings.dtype}")
        if not isinstance(self.rows, pd.DataFrame):
            raise TypeError(f"rows must be a pandas DataFrame; got {type(self.rows).__name__}")
        if KEY_COLUMN not in self.rows.columns:
            raise ValueError(
                f"rows need a '{KEY_COLUMN}' column (content hash per vector); got columns {list(self.rows.columns)}"
            )
        if len(self.rows) != embeddings.shape[0]:
            raise ValueError(f"{len(self.rows)} rows for {embeddings.shape[0]} embeddings; need one row per vector")
        keys = self.rows[KEY_COLUMN]
        if keys.isna().any() or not is_string_dtype(keys):
            not_str = keys[~keys.map(lambda key: isinstance(key, str))]
            raise ValueError(f"{len(not_str)} keys are not strings, e.g. {not_str.iloc[:3].tolist()}")
        duplicated = keys[keys.duplicated()]
        if len(duplicated):
            raise ValueError(
                f"{len(duplicated)} duplicate keys in one table, e.g. {duplicated.unique()[:3].tolist()}; "
                "each vector needs its own key"
            )
        self.embeddings = embeddings
        self.rows = self.rows.reset_index(drop=True)

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        """Vector width ``d``."""
        return int(self.embeddings.shape[1])

    @property
    def keys(self) -> list[str]:
        """Keys in vector order."""
        return self.rows[KEY_COLUMN].tolist()

    @classmethod
    def empty(cls, dim: int, model_spec_hash: str | None = None, dtype: Any = np.float32) -> EmbeddingTable:
        """A table with no vectors of width ``dim``."""
        return cls(
            embeddings=np.zeros((0, dim), dtype=dtype),
            rows=pd.DataFrame({KEY_COLUMN: pd.Series([], dtype=object)}),
            model_spec_hash=model_spec_hash,
        )

    @classmethod
    def concat(cls, tables: Sequence[EmbeddingTable]) -> EmbeddingTable:
        """Stack tables of equal width; the model spec hash is kept when all tables agree on it."""
        if not tables:
            raise ValueError("concat needs at least one table")
        dims = {table.dim for table in tables}
        if len(dims) > 1:
            raise ValueError(f"cannot concat tables of different widths {sorted(dims)}")
        hashes = {table.model_spec_hash for table in tables}
        return cls(
            embeddings=np.concatenate([table.embeddings for table in tables], axis=0),
            rows=pd.concat([table.rows for table in tables], ignore_index=True),
            model_spec_hash=hashes.pop() if len(hashes) == 1 else None,
        )

    def take(self, indices: np.ndarray | Sequence[int]) -> EmbeddingTable:
        """The rows at ``indices`` (positions, or a boolean mask), in that order."""
        positions = np.asarray(indices)
        if positions.dtype == bool:
            positions = np.flatnonzero(positions)
        return EmbeddingTable(
            embeddings=self.embeddings[positions],
            rows=self.rows.iloc[positions],
            model_spec_hash=self.model_spec_hash,
        )


class KeySet(Set[str]):
    """Read-only set of keys backed by a hashed ``pandas.Index``: cheap membership for millions of keys."""

    def __init__(self, index: pd.Index) -> None:
        self._index = index

    @classmethod
    def _from_iterable(cls, iterable: Iterable[str]) -> set[str]:
        # results of set operations (``new_keys - shards.keys``) are ordinary sets
        return set(iterable)

    def __contains__(self, key: object) -> bool:
        return key in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"KeySet({len(self)} keys)"


def read_manifest(fs: fsspec.AbstractFileSystem, directory: str) -> dict[str, Any] | None:
    """The shard directory's manifest, or None when none has been written yet."""
    path = join_path(directory, MANIFEST_NAME)
    if not fs.exists(path):
        return None
    manifest = json.loads(fs.cat_file(path))
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {version!r} is not readable by this code (supports <= {FORMAT_VERSION})"
        )
    return manifest


def read_part_rows(
    fs: fsspec.AbstractFileSystem, directory: str, name: str, columns: list[str] | None = None
) -> pd.DataFrame:
    """The rows of part ``name`` (optionally only ``columns``)."""
    with fs.open(join_path(directory, f"{name}.parquet"), "rb") as handle:
        return pq.read_table(handle, columns=columns).to_pandas()


def read_part_vectors(fs: fsspec.AbstractFileSystem, path: str, mmap: bool = True) -> np.ndarray:
    """The ``embeddings`` tensor of one safetensors part, memory-mapped when the file is local."""
    if mmap and isinstance(fs, LocalFileSystem):
        return _memmap_safetensors(path, TENSOR_NAME)
    return load_safetensors(fs.cat_file(path))[TENSOR_NAME]


def _memmap_safetensors(path: str, name: str) -> np.ndarray:
    # safetensors layout: u64 little-endian header size, JSON header, then raw little-endian tensor bytes;
    # mapping the bytes directly lets fancy indexing read only the pages it touches.
    with open(path, "rb") as handle:
        header_size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_size))
    if name not in header:
        raise ValueError(f"{path}: no tensor '{name}' (has {[k for k in header if k != '__metadata__']})")
    entry = header[name]
    if entry["dtype"] not in _SAFETENSORS_DTYPES:
        raise ValueError(f"{path}: tensor '{name}' has unsupported dtype {entry['dtype']}")
    dtype = np.dtype(_SAFETENSORS_DTYPES[entry["dtype"]]).newbyteorder("<")
    shape = tuple(int(n) for n in entry["shape"])
    begin, _ = entry["data_offsets"]
    if 0 in shape:
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=8 + header_size + begin, shape=shape)


class EmbeddingShards:
    """Read-only, lazy view of an embedding shard directory (see module docstring for the layout).

    Only parts listed in the manifest are visible; part files the manifest does not list (left by a run that
    stopped between writing a part and the manifest) are ignored. A directory without a manifest is an empty
    view: ``len`` 0, ``dim`` None, no keys.

    Args:
        path: the shard directory (fsspec path without protocol for ``fs``).
        manifest: its parsed manifest, or None for an empty view.
        fs: the filesystem holding ``path``; local when omitted.
        mmap: memory-map local parts instead of reading them into memory.
    """

    def __init__(
        self,
        path: str,
        manifest: Mapping[str, Any] | None,
        fs: fsspec.AbstractFileSystem | None = None,
        mmap: bool = True,
    ) -> None:
        self.path = str(path)
        self._fs = fs if fs is not None else fsspec.filesystem("file")
        self._mmap = mmap
        self._manifest: dict[str, Any] = dict(manifest) if manifest else {}
        self._parts: list[dict[str, Any]] = list(self._manifest.get("parts", []))
        self._part_positions = {part["name"]: i for i, part in enumerate(self._parts)}
        self._vectors: dict[int, np.ndarray] = {}
        self._keys: pd.Index | None = None
        self._key_part: np.ndarray | None = None
        self._key_row: np.ndarray | None = None
        self._rows: pd.DataFrame | None = None

    @classmethod
    def open(cls, path: str, fs: fsspec.AbstractFileSystem | None = None, mmap: bool = True) -> EmbeddingShards:
        """Read the manifest of ``path`` (if any) and return the view."""
        fs = fs if fs is not None else fsspec.filesystem("file")
        return cls(path, read_manifest(fs, path), fs=fs, mmap=mmap)

    def __len__(self) -> int:
        return int(self._manifest.get("count", 0))

    def __contains__(self, key: object) -> bool:
        return self.contains(key)

    def __repr__(self) -> str:
        return f"EmbeddingShards(path={self.path!r}, count={len(self)}, dim={self.dim}, parts={len(self._parts)})"

    @property
    def dim(self) -> int | None:
        """Vector width, None before anything was saved."""
        dim = self._manifest.get("dim")
        return None if dim is None else int(dim)

    @property
    def dtype(self) -> str | None:
        """Storage dtype (``float16``/``float32``); loaded vectors are always float32."""
        return self._manifest.get("dtype")

    @property
    def model_spec_hashes(self) -> list[str]:
        """Hashes of the model specs whose vectors are stored here."""
        return list(self._manifest.get("model_spec_hashes", []))

    @property
    def part_names(self) -> list[str]:
        """Names of the listed parts, in write order."""
        return [part["name"] for part in self._parts]

    @property
    def keys(self) -> KeySet:
        """Every stored key; reads only the ``key`` column of each part, once."""
        self._build_key_index()
        assert self._keys is not None
        return KeySet(self._keys)

    def contains(self, key: object) -> bool:
        """Whether ``key`` is stored."""
        return key in self.keys

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The keys among ``keys`` that are not stored, each once, in the order first seen.

        One hashed lookup per distinct asked key against the stored key index (built once per view), so asking
        about millions of keys costs no Python loop; a view with no parts reads nothing and returns every key.
        """
        asked = pd.Index(
            keys if isinstance(keys, (pd.Index, pd.Series, np.ndarray)) else list(keys), dtype=object
        ).unique()
        if not self._parts:
            return asked.tolist()
        self._build_key_index()
        assert self._keys is not None
        return asked[self._keys.get_indexer(asked) < 0].tolist()

    @property
    def rows(self) -> pd.DataFrame:
        """All rows in storage order, with ``_part`` (part name) and ``_row`` (row within the part) added."""
        if self._rows is None:
            frames = []
            for part in self._parts:
                frame = self._read_rows(part["name"])
                frame[PART_COLUMN] = part["name"]
                frame[ROW_COLUMN] = np.arange(len(frame), dtype=np.int64)
                frames.append(frame)
            if frames:
                self._rows = pd.concat(frames, ignore_index=True)
            else:
                self._rows = pd.DataFrame(
                    {
                        KEY_COLUMN: pd.Series([], dtype=object),
                        PART_COLUMN: pd.Series([], dtype=object),
                        ROW_COLUMN: pd.Series([], dtype=np.int64),
                    }
                )
        return self._rows

    def get(self, keys: Sequence[str]) -> np.ndarray:
        """Vectors for ``keys`` as float32 ``[len(keys), d]``, in the order asked.

        Raises:
            KeyError: naming the keys that are not stored.
        """
        keys = list(keys)
        self._build_key_index()
        assert self._keys is not None and self._key_part is not None and self._key_row is not None
        positions = self._keys.get_indexer(pd.Index(keys, dtype=object)) if keys else np.zeros(0, dtype=np.int64)
        missing = [key for key, position in zip(keys, positions) if position < 0]
        if missing:
            raise KeyError(f"{len(missing)} of {len(keys)} keys not in {self.path}: {missing[:5]}")
        return self._gather(self._key_part[positions], self._key_row[positions])

    def select(self, **ids: Any) -> EmbeddingTable:
        """Rows and vectors whose id columns equal the given values, e.g. ``select(book_id="abc")``.

        A list/tuple/set value matches any of its members. With no arguments, everything.

        Raises:
            KeyError: for a column that no row has.
        """
        rows = self.rows
        mask = np.ones(len(rows), dtype=bool)
        for column, value in ids.items():
            if column not in rows.columns:
                raise KeyError(f"no column '{column}' in {self.path}; columns are {self._user_columns(rows)}")
            if isinstance(value, (list, tuple, set, frozenset, np.ndarray, pd.Index, pd.Series)):
                mask &= rows[column].isin(list(value)).to_numpy()
            else:
                mask &= (rows[column] == value).to_numpy()
        return self._table_from_rows(rows[mask])

    def to_table(self) -> EmbeddingTable:
        """Everything as one in-memory table (float32 vectors)."""
        if not self._parts:
            return EmbeddingTable.empty(self.dim or 0)
        return EmbeddingTable.concat(list(self.iter_parts()))

    def iter_parts(self) -> Iterator[EmbeddingTable]:
        """One in-memory table (float32 vectors) per part, in write order."""
        for position, part in enumerate(self._parts):
            yield EmbeddingTable(
                embeddings=np.asarray(self._part_vectors(position), dtype=np.float32),
                rows=self._read_rows(part["name"]),
                model_spec_hash=part.get("model_spec_hash"),
            )

    def _read_rows(self, name: str, columns: list[str] | None = None) -> pd.DataFrame:
        return read_part_rows(self._fs, self.path, name, columns=columns)

    def _part_vectors(self, position: int) -> np.ndarray:
        if position not in self._vectors:
            name = self._parts[position]["name"]
            vectors = read_part_vectors(self._fs, join_path(self.path, f"{name}.safetensors"), mmap=self._mmap)
            expected = (int(self._parts[position]["rows"]), self.dim)
            if vectors.shape != expected:
                raise ValueError(f"{self.path}/{name}.safetensors has shape {vectors.shape}; manifest says {expected}")
            self._vectors[position] = vectors
        return self._vectors[position]

    def _build_key_index(self) -> None:
        if self._keys is not None:
            return
        keys: list[np.ndarray] = []
        part_of: list[np.ndarray] = []
        for position, part in enumerate(self._parts):
            part_keys = self._read_rows(part["name"], columns=[KEY_COLUMN])[KEY_COLUMN].to_numpy(dtype=object)
            keys.append(part_keys)
            part_of.append(np.full(len(part_keys), position, dtype=np.int32))
        all_keys = np.concatenate(keys) if keys else np.zeros(0, dtype=object)
        index = pd.Index(all_keys, dtype=object)
        self._key_part = np.concatenate(part_of) if part_of else np.zeros(0, dtype=np.int32)
        self._key_row = np.concatenate([np.arange(len(k), dtype=np.int64) for k in keys]) if keys else np.zeros(
            0, dtype=np.int64
        )
        if index.has_duplicates:
            # the writer never appends a stored key; if a hand-edited directory has one, the latest part wins
            keep = ~index.duplicated(keep="last")
            logger.warning("%s: %d duplicate keys across parts; using the latest", self.path, int((~keep).sum()))
            index, self._key_part, self._key_row = index[keep], self._key_part[keep], self._key_row[keep]
        self._keys = index

    def _gather(self, parts: np.ndarray, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(parts), self.dim or 0), dtype=np.float32)
        for position in np.unique(parts):
            where = np.flatnonzero(parts == position)
            wanted = rows[where]
            # sorted, de-duplicated reads touch each memory-mapped page once
            unique_rows, inverse = np.unique(wanted, return_inverse=True)
            out[where] = np.asarray(self._part_vectors(int(position))[unique_rows], dtype=np.float32)[inverse]
        return out

    def _table_from_rows(self, rows: pd.DataFrame) -> EmbeddingTable:
        parts = rows[PART_COLUMN].map(self._part_positions).to_numpy(dtype=np.int64)
        vectors = self._gather(parts, rows[ROW_COLUMN].to_numpy(dtype=np.int64))
        hashes = {self._parts[p].get("model_spec_hash") for p in np.unique(parts)}
        return EmbeddingTable(
            embeddings=vectors,
            rows=rows.drop(columns=[PART_COLUMN, ROW_COLUMN]),
            model_spec_hash=hashes.pop() if len(hashes) == 1 else None,
        )

    @staticmethod
    def _user_columns(rows: pd.DataFrame) -> list[str]:
        return [c for c in rows.columns if c not in (PART_COLUMN, ROW_COLUMN)]


def existing_part_numbers(fs: fsspec.AbstractFileSystem, directory: str) -> list[int]:
    """Numbers of every part file in ``directory``, listed in the manifest or not."""
    if not fs.exists(directory):
        return []
    numbers = set()
    for entry in fs.ls(directory, detail=False):
        match = PART_FILE_PATTERN.match(str(entry).rstrip("/").rsplit("/", 1)[-1])
        if match:
            numbers.add(int(match.group(1)))
    return sorted(numbers)

