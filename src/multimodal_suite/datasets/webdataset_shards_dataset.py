"""``WebDatasetShardsDataset``: a folder of webdataset ``.tar`` shards (+ per-shard parquet metadata and a
separate folder of per-sample tag files), loaded as a lazy, tolerant
:class:`~multimodal_suite.common.webdataset_shards.WebDatasetShards` view.

Layout::

    <filepath>/shard-000000.tar        <key>.jpg + <key>.json per sample
    <filepath>/shard-000000.parquet    optional: one row per sample ("key", width, height, …)
    <tags_dir>/<key>.json              optional: {"tags": [...]}

The dataset only reads: shards are written by whatever produced the collection (img2dataset, a webdataset
``TarWriter``, or ``SampleFilesDataset`` for the generated samples).
"""
from __future__ import annotations

import os
from copy import deepcopy
from typing import Any

from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path

from multimodal_suite.common.webdataset_shards import IMAGE_EXTENSIONS, WebDatasetShards

try:
    from kedro_datasets._typing import TablePreview
except ImportError:  # kedro-datasets without kedro-viz preview types
    TablePreview = dict  # type: ignore[misc,assignment]


class WebDatasetShardsDataset(AbstractDataset[Any, WebDatasetShards]):
    """Webdataset shards as a lazy view: ``load()`` lists the shards and returns a :class:`WebDatasetShards`.

    Nothing is extracted and nothing but the listing happens on load; ``view.iter_samples(name)`` streams one
    shard, skipping (and reporting as a ``SampleProblem``) corrupt members, undecodable images and the lost end
    of a truncated tar. ``start_shard``/``end_shard`` select positions ``start_shard`` (inclusive) to
    ``end_shard`` (exclusive) of the sorted shard list, like a slice; ``view.shard_path(name)`` gives the path
    Ray Data's ``read_webdataset`` takes.

    Examples:
        Using the YAML API:

        ```yaml
        tagging_source_shards:
          type: multimodal_suite.datasets.webdataset_shards_dataset.WebDatasetShardsDataset
          filepath: data/01_raw/tagging_source
          tags_dir: data/01_raw/tagging_vlm_tags
          start_shard: 0
          end_shard: 100
          load_args:
            verify_images: true
        ```

        Using the Python API:

        >>> import io, json, tarfile, tempfile
        >>> from pathlib import Path
        >>> from PIL import Image
        >>> from multimodal_suite.datasets.webdataset_shards_dataset import WebDatasetShardsDataset
        >>>
        >>> scratch = tempfile.TemporaryDirectory()
        >>> tmp_path = Path(scratch.name)
        >>> image = io.BytesIO()
        >>> Image.new("RGB", (8, 8), "red").save(image, format="PNG")
        >>> (tmp_path / "shards").mkdir()
        >>> with tarfile.open(tmp_path / "shards" / "shard-000000.tar", "w") as tar:
        ...     for name, data in [("k0.png", image.getvalue()), ("k0.json", b'{"width": 8}')]:
        ...         info = tarfile.TarInfo(name)
        ...         info.size = len(data)
        ...         tar.addfile(info, io.BytesIO(data))
        >>> (tmp_path / "tags").mkdir()
        >>> _ = (tmp_path / "tags" / "k0.json").write_text(json.dumps({"tags": ["red", "square"]}))
        >>> dataset = WebDatasetShardsDataset(filepath=tmp_path / "shards", tags_dir=tmp_path / "tags")
        >>> view = dataset.load()
        >>> view.shards
        ['shard-000000.tar']
        >>> [(s.key, s.meta, s.tags) for s in view.iter_samples("shard-000000.tar")]
        [('k0', {'width': 8}, ['red', 'square'])]
        >>> scratch.cleanup()
    """

    DEFAULT_LOAD_ARGS: dict[str, Any] = {"verify_images": True, "image_extensions": IMAGE_EXTENSIONS,
                                         "metadata_key": "key"}

    def __init__(
        self,
        *,
        filepath: str | os.PathLike[str],
        tags_dir: str | os.PathLike[str] | None = None,
        start_shard: int | None = None,
        end_shard: int | None = None,
        load_args: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Creates a dataset for the shards under ``filepath``.

        Args:
            filepath: Folder of ``.tar`` shards (``.tar.gz``/``.tgz`` too); a local path or an fsspec URL.
            tags_dir: Folder of ``<key>.json`` tag files; ``None`` when there are none (every ``tags`` is None).
            start_shard: First position in the sorted shard list (inclusive); ``None`` for the first.
            end_shard: Position to stop before (exclusive); ``None`` (or past the end) for all the rest.
            load_args: ``verify_images`` (default true: skip images that do not decode), ``image_extensions``
                (member extensions that are images, in order of preference), ``metadata_key`` (the parquet's
                key column, default ``"key"``).
            fs_args: Extra arguments for the fsspec filesystem constructor.
            credentials: Credentials for the filesystem (merged into its constructor arguments).
            metadata: Any arbitrary metadata; ignored by Kedro.

        Raises:
            DatasetError: For an unknown ``load_args`` key or an invalid shard range.
        """
        self._filepath = str(filepath)
        self._protocol, _ = get_protocol_and_path(self._filepath)
        self._tags_dir = None if tags_dir is None else str(tags_dir)
        # Paths as Kedro's other datasets resolve them, so every dataset on one filepath sees the same files.
        self._url = self._kedro_url(self._filepath)
        self._tags_url = None if self._tags_dir is None else self._kedro_url(self._tags_dir)
        self._load_args = {**deepcopy(self.DEFAULT_LOAD_ARGS), **deepcopy(load_args or {})}
        unknown = set(self._load_args) - set(self.DEFAULT_LOAD_ARGS)
        if unknown:
            raise DatasetError(f"{self._filepath}: unknown load_args {sorted(unknown)}; "
                               f"known: {sorted(self.DEFAULT_LOAD_ARGS)}")
        if (start_shard is not None and start_shard < 0) or (end_shard is not None and end_shard < 0) or (
            start_shard is not None and end_shard is not None and start_shard > end_shard
        ):
            raise DatasetError(f"{self._filepath}: need 0 <= start_shard <= end_shard, "
                               f"got {start_shard}, {end_shard}")
        self._start_shard, self._end_shard = start_shard, end_shard
        self._storage_options = {**deepcopy(fs_args or {}), **deepcopy(credentials or {})}
        self.metadata = metadata

    @staticmethod
    def _kedro_url(filepath: str) -> str:
        protocol, path = get_protocol_and_path(filepath)
        return path if protocol == "file" else f"{protocol}://{path}"

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": self._filepath,
            "protocol": self._protocol,
            "tags_dir": self._tags_dir,
            "start_shard": self._start_shard,
            "end_shard": self._end_shard,
            "load_args": self._load_args,
        }

    def _view(self) -> WebDatasetShards:
        view = WebDatasetShards(
            self._url,
            tags_url=self._tags_url,
            storage_options=self._storage_options,
            verify_images=bool(self._load_args["verify_images"]),
            image_extensions=tuple(self._load_args["image_extensions"]),
            metadata_key=str(self._load_args["metadata_key"]),
        )
        return view.shard_range(self._start_shard, self._end_shard)

    def _exists(self) -> bool:
        try:
            return len(self._view()) > 0
        except FileNotFoundError:
            return False

    def load(self) -> WebDatasetShards:
        try:
            view = self._view()
        except FileNotFoundError as error:
            raise DatasetError(
                f"no shard folder at {self._filepath!r}: point the catalog entry at your shards, or generate "
                "samples with `kedro run --pipeline demo_data --env demo`"
            ) from error
        if not len(view):
            raise DatasetError(f"no .tar shards in {self._filepath!r} (start_shard={self._start_shard}, "
                               f"end_shard={self._end_shard})")
        return view

    def save(self, data: Any) -> None:
        raise DatasetError(
            f"{self._filepath}: WebDatasetShardsDataset is read-only; write shards with the tool that made them "
            "(or SampleFilesDataset for generated samples)"
        )

    def preview(self, nrows: int = 20) -> TablePreview:
        """One row per shard of the selection (at most ``nrows``): ``shard``, ``samples`` (distinct keys in the
        tar's member headers, data skipped by seeking; local shards only, ``None`` on remote storage where seeking
        means downloading), ``parquet_rows`` (from the parquet footer; ``None`` without one) and ``size_mb``, in
        pandas ``split`` form plus the total shard count."""
        try:
            view = self._view()
        except FileNotFoundError:
            view = None
        rows: list[list[Any]] = []
        if view is not None:
            for name in view.shards[: max(nrows, 0)]:
                size_mb = round(view.filesystem.size(view.shard_path(name)) / 1e6, 3)
                try:
                    parquet_rows = view.parquet_num_rows(name)
                except Exception:  # noqa: BLE001 - a broken parquet shows as missing, it does not break the view
                    parquet_rows = None
                samples = view.count_keys(name) if self._protocol == "file" else None
                rows.append([name, samples, parquet_rows, size_mb])
        return TablePreview({
            "columns": ["shard", "samples", "parquet_rows", "size_mb"],
            "index": list(range(len(rows))),
            "data": rows,
            "shards": 0 if view is None else len(view),
        })
