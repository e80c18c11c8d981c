"""``ComicBookFolderDataset``: a folder of comic books, one sub-folder of page images (+ JSON sidecars) per book.

Loading lists files only and returns lazy :class:`~multimodal_suite.common.comics.books.ComicBook` views; saving
writes generated sample books, and refuses to write into a folder it did not create.
"""
from __future__ import annotations

import base64
import io
import logging
import os
import posixpath
from copy import deepcopy
from typing import Any

import fsspec
from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path
from PIL import Image, ImageDraw, ImageFont

from multimodal_suite.common.comics.books import IMAGE_EXTENSIONS, ComicBook, book_from_files, scan_books
from multimodal_suite.datasets.generated_folder import prepare_generated_folder, write_bytes

try:  # kedro-viz renders this type as an image (base64 PNG); the string is the same without it
    from kedro_datasets._typing import ImagePreview
except ImportError:  # pragma: no cover
    ImagePreview = str  # type: ignore[assignment,misc]

logger = logging.getLogger(__name__)

_MARKER_TEXT = b"Generated sample books: saving again deletes and rewrites every book folder here.\n"


class ComicBookFolderDataset(AbstractDataset[dict[str, bytes], dict[str, ComicBook]]):
    """A book collection: ``<filepath>/<book_id>/NNN.jpg`` (+ ``NNN.ocr.json``, ``NNN.panels.json``).

    ``load()`` returns ``{book_id: ComicBook}`` sorted by book id, pages sorted by the number in their file name
    (``10.jpg`` after ``9.jpg``). It only lists files; pages are read when a node asks for them.

    ``save(files)`` takes ``{"<book_id>/<file name>": bytes}`` and writes each file atomically. It writes a
    ``.sample_data`` marker and refuses to write into a non-empty folder without one, so a real collection is
    never overwritten by generated samples; into a marked folder it first deletes the previous book folders,
    so a regeneration gives exactly the files passed.

    Examples:
        Using the YAML API:

        ```yaml
        comic_books:
          type: multimodal_suite.datasets.comic_books_dataset.ComicBookFolderDataset
          filepath: data/01_raw/comic_books
        ```

        Using the Python API:

        >>> import tempfile
        >>> from multimodal_suite.datasets.comic_books_dataset import ComicBookFolderDataset
        >>>
        >>> scratch = tempfile.TemporaryDirectory()
        >>> dataset = ComicBookFolderDataset(filepath=f"{scratch.name}/books")
        >>> dataset.save({"0a1b2c3d/000.jpg": b"...", "0a1b2c3d/000.ocr.json": b'{"OCRResult": ""}'})
        >>> books = dataset.load()
        >>> [page.page_index for page in books["0a1b2c3d"].pages]
        [0]
        >>> scratch.cleanup()
    """

    def __init__(
        self,
        *,
        filepath: str | os.PathLike[str],
        image_extensions: tuple[str, ...] | list[str] = IMAGE_EXTENSIONS,
        fs_args: dict[str, Any] | None = None,
        credentials: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Creates a dataset for the book folders under ``filepath``.

        Args:
            filepath: Folder holding one sub-folder per book; a local path or an fsspec URL (``s3://…``).
            image_extensions: File name endings that are page images (case-insensitive).
            fs_args: Extra arguments for the fsspec filesystem constructor.
            credentials: Credentials for the filesystem (merged into its constructor arguments).
            metadata: Any arbitrary metadata; ignored by Kedro.
        """
        self._protocol, path = get_protocol_and_path(str(filepath))
        self._fs_args = {**deepcopy(fs_args or {}), **deepcopy(credentials or {})}
        self._fs = fsspec.filesystem(self._protocol, **self._fs_args)
        self._root = path.rstrip("/")
        self._filepath = str(filepath)
        self._image_extensions = tuple(image_extensions)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "protocol": self._protocol, "image_extensions": self._image_extensions}

    def _exists(self) -> bool:
        return bool(self._fs.isdir(self._root))

    def _url(self, path: str) -> str:
        return path if self._protocol == "file" else f"{self._protocol}://{path}"

    def load(self) -> dict[str, ComicBook]:
        if not self._exists():
            raise DatasetError(
                f"no book folder at {self._filepath!r}: point the catalog entry at your books, or generate "
                "samples with `kedro run --pipeline demo_data --env demo`"
            )
        return scan_books(self._url(self._root), self._image_extensions, **self._fs_args)

    def save(self, data: dict[str, bytes]) -> None:
        targets = {key: self._target(key) for key in data}
        self._prepare_root()
        for key, target in targets.items():
            write_bytes(self._fs, self._protocol, target, data[key])
        books = {key.split("/")[0] for key in data}
        logger.info("wrote %d files (%d books) under %s", len(data), len(books), self._filepath)

    def _target(self, key: str) -> str:
        """The full path of a ``"<book_id>/<file>"`` key; refuses anything that could escape the folder."""
        parts = key.split("/")
        if len(parts) != 2 or any(part in ("", ".", "..") or part.startswith(".") for part in parts) or "\\" in key:
            raise DatasetError(f"{self._filepath}: file key {key!r} is not '<book_id>/<file name>'; nothing written")
        return posixpath.join(self._root, key)

    def _prepare_root(self) -> None:
        """Check the folder may be written, clear the previous sample books, and mark it as sample data."""
        prepare_generated_folder(self._fs, self._protocol, self._root, described_as="sample books",
                                 marker_text=_MARKER_TEXT, clear=lambda entry: entry["type"] == "directory")

    def preview(self, books: int = 6, pages: int = 3, thumb_height: int = 120) -> ImagePreview:
        """A grid of the first pages of the first books, as a base64-encoded PNG for kedro-viz.

        One column per book (in book id order), headed by the book id and its page count; a page that cannot be
        decoded shows as a crossed-out tile. Only the shown books' folders are listed and at most
        ``books * pages`` images are decoded (JPEGs at reduced size), so it stays cheap on large collections.

        Args:
            books: Books shown.
            pages: Leading pages shown per book.
            thumb_height: Height of a page tile in pixels; its width is two thirds of that.

        Returns:
            The PNG, base64-encoded (an image of the message "no books" when the folder is empty or missing).
        """
        shown: list[ComicBook] = []
        if books > 0 and self._exists():
            self._fs.invalidate_cache(self._root)
            folders = sorted(
                name
                for name, kind in (
                    (posixpath.basename(entry["name"].rstrip("/")), entry["type"])
                    for entry in self._fs.ls(self._root, detail=True)
                )
                if kind == "directory" and not name.startswith(".")
            )
            for book_id in folders[:books]:
                folder = posixpath.join(self._root, book_id)
                names = [posixpath.basename(path) for path in self._fs.ls(folder, detail=False)]
                shown.append(book_from_files(book_id, folder, names, self._image_extensions))

        font = ImageFont.load_default(size=11)
        pad, line = 6, 13
        if not shown:
            message = f"no books under {self._filepath}"
            canvas = Image.new("RGB", (max(240, int(font.getlength(message)) + 2 * pad), 40), "white")
            ImageDraw.Draw(canvas).text((pad, 12), message, fill="black", font=font)
        else:
            # One column per book keeps the grid landscape, the shape kedro-viz's side panel draws previews in.
            tile_w, tile_h = max(2 * thumb_height // 3, 8), max(thumb_height, 12)
            rows = max(1, min(pages, max(book.num_pages for book in shown)))
            caption = 2 * line + 2
            size = (pad + len(shown) * (tile_w + pad), pad + caption + rows * (tile_h + pad))
            canvas = Image.new("RGB", size, "white")
            draw = ImageDraw.Draw(canvas)
            for column, book in enumerate(shown):
                left = pad + column * (tile_w + pad)
                draw.text((left, pad), book.book_id, fill="black", font=font)
                draw.text((left, pad + line), f"{book.num_pages} pages", fill="#555555", font=font)
                for row, page in enumerate(book.pages[:rows]):
                    top = pad + caption + row * (tile_h + pad)
                    box = (left, top, left + tile_w - 1, top + tile_h - 1)
                    draw.rectangle(box, fill="#e6e6e6")
                    try:
                        with Image.open(io.BytesIO(self._fs.cat_file(page.image_path))) as image:
                            image.draft("RGB", (tile_w, tile_h))  # JPEG decodes at a fraction of full size
                            thumb = image.convert("RGB")
                        thumb.thumbnail((tile_w, tile_h))
                    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
                        draw.line(box, fill="#c0392b", width=2)
                        draw.line((box[0], box[3], box[2], box[1]), fill="#c0392b", width=2)
                        continue
                    canvas.paste(thumb, (left + (tile_w - thumb.width) // 2, top + (tile_h - thumb.height) // 2))
        buffer = io.BytesIO()
        # A 128-colour palette keeps the PNG (and the JSON that carries it to the browser) ~4x smaller.
        canvas.quantize(128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(buffer, format="PNG")
        return ImagePreview(base64.b64encode(buffer.getvalue()).decode("ascii"))
