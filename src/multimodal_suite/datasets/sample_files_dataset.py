"""``SampleFilesDataset``: generated files (relative path → bytes) written under one folder.

Saving writes each file atomically and marks the folder with a ``.sample_data`` file; it refuses to write into a
non-empty folder without that marker, so generated samples never overwrite a real collection. Loading returns
lazy loaders, one per file, in the style of Kedro's ``PartitionedDataset``.
"""
from __future__ import annotations

import logging
import os
import posixpath
from collections.abc import Callable
from copy import deepcopy
from functools import partial
from typing import Any

import fsspec
from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path

from multimodal_suite.datasets.generated_folder import prepare_generated_folder, write_bytes

try:
    from kedro_datasets._typing import TablePreview
except ImportError:  # kedro-datasets without kedro-viz preview types
    TablePreview = dict  # type: ignore[misc,assignment]

logger = logging.getLogger(__name__)

_MARKER_TEXT = b"Generated sample files: saving again deletes and rewrites everything in this folder.\n"


class SampleFilesDataset(AbstractDataset[dict[str, bytes], dict[str, Callable[[], bytes]]]):
    """Files under ``<filepath>``, keyed by their path relative to it (``"00290/00290_000.jpg"``).

    ``save(files)`` takes ``{relative path: bytes}``; sub-folders are created as needed and each file is written
    atomically (temporary sibling, then rename). The folder gets a ``.sample_data`` marker, and a non-empty
    folder without one is refused, so a real collection is never overwritten. Saving into a marked folder first
    deletes everything else in it, so the folder then holds exactly the files passed.

    ``load()`` returns ``{relative path: loader}`` sorted by path, where calling ``loader()`` reads that file's
    bytes; listing is all that happens up front. Hidden files and folders (names starting with ``.``: the
    marker, temporary files) are not listed.

    Examples:
        Using the YAML API:

        ```yaml
        tagging_target_images@files:
          type: multimodal_suite.datasets.sample_files_dataset.SampleFilesDataset
          filepath: data/01_raw/tagging_target
        ```

        Using the Python API:

        >>> import tempfile
        >>> from multimodal_suite.datasets.sample_files_dataset import SampleFilesDataset
        >>>
        >>> scratch = tempfile.TemporaryDirectory()
        >>> dataset = SampleFilesDataset(filepath=f"{scratch.name}/samples")
        >>> dataset.save({"b/2.txt": b"two", "a.txt": b"one"})
        >>> files = dataset.load()
        >>> list(files), files["b/2.txt"]()
        (['a.txt', 'b/2.txt'], b'two')
        >>> scratch.cleanup()
    """

    def __init__(
        self,
        *,
        filepath: str | os.PathLike[str],
        fs_args: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Creates a dataset for the files under ``filepath``.

        Args:
            filepath: The folder; a local path or an fsspec URL (``s3://…``).
            fs_args: Extra arguments for the fsspec filesystem constructor.
            credentials: Credentials for the filesystem (merged into its constructor arguments).
            metadata: Any arbitrary metadata; ignored by Kedro.
        """
        self._protocol, path = get_protocol_and_path(str(filepath))
        self._fs_args = {**deepcopy(fs_args or {}), **deepcopy(credentials or {})}
        self._fs = fsspec.filesystem(self._protocol, **self._fs_args)
        self._root = path.rstrip("/") or path
        self._filepath = str(filepath)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "protocol": self._protocol}

    def _exists(self) -> bool:
        return bool(self._fs.isdir(self._root))

    def _listing(self) -> dict[str, int]:
        """``{relative path: size in bytes}`` of every visible file under the folder, sorted by path."""
        self._fs.invalidate_cache(self._root)
        prefix = self._root.rstrip("/") + "/"
        listing = {}
        for path, info in self._fs.find(self._root, detail=True).items():
            relative = path[len(prefix):] if path.startswith(prefix) else posixpath.relpath(path, self._root)
            if not any(part.startswith(".") for part in relative.split("/")):
                listing[relative] = int(info.get("size") or 0)
        return dict(sorted(listing.items()))

    def load(self) -> dict[str, Callable[[], bytes]]:
        if not self._exists():
            raise DatasetError(
                f"no folder at {self._filepath!r}: point the catalog entry at your files, or generate samples "
                "with `kedro run --pipeline demo_data --env demo`"
            )
        return {
            relative: partial(self._fs.cat_file, posixpath.join(self._root, relative))
            for relative in self._listing()
        }

    def save(self, data: dict[str, bytes]) -> None:
        targets = {key: self._target(key) for key in data}  # every key is checked before anything is written
        self._prepare_root()
        for key, target in targets.items():
            write_bytes(self._fs, self._protocol, target, data[key])
        logger.info("wrote %d files (%.1f MB) under %s", len(data),
                    sum(len(value) for value in data.values()) / 1e6, self._filepath)

    def _target(self, key: str) -> str:
        """The full path of a relative key; refuses anything that could escape the folder or hide a file."""
        parts = key.split("/")
        if not key or "\\" in key or any(part in ("", ".", "..") or part.startswith(".") for part in parts):
            raise DatasetError(
                f"{self._filepath}: file key {key!r} is not a relative path of visible names "
                "('dir/name.ext', no '..', no leading '/' or '.'); nothing written"
            )
        return posixpath.join(self._root, key)

    def _prepare_root(self) -> None:
        """Check the folder may be written, clear the previous samples, and mark it as sample data."""
        prepare_generated_folder(self._fs, self._protocol, self._root, described_as="sample files",
                                 marker_text=_MARKER_TEXT, clear=lambda entry: True)

    def preview(self, nrows: int = 20) -> TablePreview:
        """The first ``nrows`` files (``path``, ``size_bytes``) in pandas ``split`` form, plus the file count.

        Only the folder listing is read, never a file's contents.
        """
        listing = self._listing() if self._exists() else {}
        rows = [[path, size] for path, size in list(listing.items())[: max(nrows, 0)]]
        return TablePreview({
            "columns": ["path", "size_bytes"],
            "index": list(range(len(rows))),
            "data": rows,
            "files": len(listing),
        })
