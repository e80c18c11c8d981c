"""``ImageFolderDataset``: the image files of one folder, loaded lazily (read-only)."""
from __future__ import annotations

import posixpath
import re
from copy import deepcopy
from functools import partial
from typing import Any, Callable

import fsspec
from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path

try:
    from kedro_datasets._typing import TablePreview
except ImportError:  # kedro-datasets without kedro-viz preview types
    TablePreview = dict  # type: ignore[misc,assignment]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def natural_key(name: str) -> list[Any]:
    """Sort key that orders ``img2.jpg`` before ``img10.jpg``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


class ImageFolderDataset(AbstractDataset[None, dict[str, Callable[[], bytes]]]):
    """The images directly inside ``<filepath>``, as ``{file name: loader}`` in natural name order.

    Calling a loader reads that file's bytes; only the listing happens on load. Files whose extension is not an
    image extension, and hidden files, are not listed. A folder that does not exist is a :class:`DatasetError`
    that names the folders next to it, since the folder is usually chosen on the command line
    (``--params "tagging.target.folder='00290'"``).

    Examples:
        Using the YAML API:

        ```yaml
        tagging_target_images:
          type: multimodal_suite.datasets.ImageFolderDataset
          filepath: data/01_raw/tagging_target/${runtime_params:tagging.target.folder,00290}
        ```

        Using the Python API:

        >>> import tempfile
        >>> from pathlib import Path
        >>> from multimodal_suite.datasets import ImageFolderDataset
        >>>
        >>> scratch = tempfile.TemporaryDirectory()
        >>> folder = Path(scratch.name, "00290")
        >>> folder.mkdir()
        >>> _ = (folder / "b10.jpg").write_bytes(b"x")
        >>> _ = (folder / "b2.jpg").write_bytes(b"y")
        >>> images = ImageFolderDataset(filepath=str(folder)).load()
        >>> list(images), images["b2.jpg"]()
        (['b2.jpg', 'b10.jpg'], b'y')
        >>> scratch.cleanup()
    """

    def __init__(
        self,
        *,
        filepath: str,
        image_extensions: list[str] | tuple[str, ...] = IMAGE_EXTENSIONS,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        protocol, path = get_protocol_and_path(str(filepath))
        self._protocol = protocol
        self._filepath = path.rstrip("/")
        self._fs = fsspec.filesystem(protocol, **deepcopy(credentials or {}), **deepcopy(fs_args or {}))
        self._extensions = tuple(ext.lower() for ext in image_extensions)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "protocol": self._protocol, "image_extensions": self._extensions}

    def _exists(self) -> bool:
        return self._fs.isdir(self._filepath)

    def _names(self) -> list[str]:
        if not self._fs.isdir(self._filepath):
            parent = posixpath.dirname(self._filepath)
            siblings = sorted(posixpath.basename(p.rstrip("/")) for p in self._fs.ls(parent, detail=False)
                              if self._fs.isdir(p)) if self._fs.isdir(parent) else []
            shown = ", ".join(siblings[:20]) + (" …" if len(siblings) > 20 else "")
            raise DatasetError(
                f"image folder {self._filepath!r} does not exist. Folders in {parent!r}: {shown or 'none'}. "
                f"Pick one with --params \"tagging.target.folder='<name>'\" (or generate the demo samples with "
                f"`kedro run --pipeline demo_data --env demo`)."
            )
        names = (posixpath.basename(p) for p in self._fs.ls(self._filepath, detail=False) if self._fs.isfile(p))
        return sorted((n for n in names if not n.startswith(".") and n.lower().endswith(self._extensions)),
                      key=natural_key)

    def load(self) -> dict[str, Callable[[], bytes]]:
        return {name: partial(self._fs.cat_file, posixpath.join(self._filepath, name)) for name in self._names()}

    def save(self, data: None) -> None:
        raise DatasetError(f"{type(self).__name__} is read-only ({self._filepath})")

    def preview(self, nrows: int = 10) -> TablePreview:
        """The first ``nrows`` image names and the folder's image count."""
        names = self._names() if self._exists() else []
        return {"columns": ["image", "images_in_folder"], "index": list(range(min(nrows, len(names)))),
                "data": [[name, len(names)] for name in names[:nrows]]}
