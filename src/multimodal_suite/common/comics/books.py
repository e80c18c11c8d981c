"""Lazy views of a comic-book collection: one folder per book, one image per page, JSON sidecars per page.

Layout (what real collections look like)::

    <root>/<book_id>/000.jpg          page 0 (the number in the name is the 0-based page index)
    <root>/<book_id>/000.ocr.json     {"OCRResult": "text"}            (may be missing, empty or malformed)
    <root>/<book_id>/000.panels.json  [{"bbox": [x, y, w, h], "text": "..."}, ...]

Some books name pages without padding (``0.jpg … 119.jpg``), so page order always comes from the number in the
name, never from the string. Nothing here reads an image until asked; listing a collection only lists files.
Paths are fsspec URLs (plain paths for local files), so the same code reads local folders and object stores.
"""
from __future__ import annotations

import json
import logging
import posixpath
from dataclasses import dataclass, field
from typing import Any

import fsspec
from PIL import Image

from ..images import DEFAULT_MAX_IMAGE_PIXELS, ImageDecodeError, decode_image
from ..paths import component_problem, safe_component

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png")
OCR_SUFFIX = ".ocr.json"
PANELS_SUFFIX = ".panels.json"
OCR_KEY = "OCRResult"


def natural_page_index(filename: str) -> int | None:
    """The page number in an image file name (``"007.jpg"`` → 7, ``"12.png"`` → 12), None when not a number."""
    stem = posixpath.splitext(posixpath.basename(filename))[0]
    return int(stem) if stem.isascii() and stem.isdigit() else None


def _read_json(path: str) -> tuple[Any, str | None]:
    """Parsed JSON at ``path`` and None, or ``(None, "missing" | "malformed")``."""
    try:
        with fsspec.open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return None, "missing"
    try:
        return json.loads(raw), None
    except (UnicodeDecodeError, ValueError):
        return None, "malformed"


def _valid_panel(entry: Any) -> bool:
    if not isinstance(entry, dict):
        return False
    bbox = entry.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        return False
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)
    return numbers and isinstance(entry.get("text", ""), str)


@dataclass(frozen=True)
class PageRef:
    """One page of a book: where its image is, and how to read the image and its sidecars.

    Attributes:
        book_id: The book folder's name (the CoSMo ``hash_code``).
        page_index: 0-based page number, taken from the image file name.
        image_path: fsspec URL (plain path for local files) of the page image.
    """

    book_id: str
    page_index: int
    image_path: str

    def _sidecar(self, suffix: str) -> str:
        return posixpath.splitext(self.image_path)[0] + suffix

    @property
    def ocr_path(self) -> str:
        return self._sidecar(OCR_SUFFIX)

    @property
    def panels_path(self) -> str:
        return self._sidecar(PANELS_SUFFIX)

    def read_image_bytes(self) -> bytes:
        """The image file's bytes, undecoded (may be empty or truncated: decoding is the reader's check)."""
        with fsspec.open(self.image_path, "rb") as handle:
            data: bytes = handle.read()
        return data

    def read_image(
        self, mode: str = "RGB", max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    ) -> tuple[Image.Image | None, str | None]:
        """The fully decoded image and None, or ``(None, problem)`` with problem ``"image_empty"`` (zero bytes),
        ``"image_too_large"`` (the header claims more than ``max_pixels`` pixels; nothing is decoded) or
        ``"image_unreadable"`` (missing, truncated or not an image)."""
        try:
            data = self.read_image_bytes()
        except OSError:
            return None, "image_unreadable"
        try:
            return decode_image(data, max_pixels=max_pixels, mode=mode), None
        except ImageDecodeError as error:
            problems = {"empty": "image_empty", "too_large": "image_too_large", "undecodable": "image_unreadable"}
            return None, problems[error.kind]

    def read_ocr(self) -> tuple[str, str | None]:
        """The page's OCR text and None, or ``("", "ocr_missing" | "ocr_malformed")``.

        Malformed: not JSON, or no ``OCRResult`` string. An empty ``OCRResult`` is valid (a page without text).
        """
        data, problem = _read_json(self.ocr_path)
        if problem is not None:
            return "", f"ocr_{problem}"
        if not isinstance(data, dict) or not isinstance(data.get(OCR_KEY), str):
            return "", "ocr_malformed"
        return data[OCR_KEY], None

    def read_panels(self) -> tuple[list[dict[str, Any]], str | None]:
        """The page's panels ``[{"bbox": [x, y, w, h], "text": str}]`` and None, or ``([], problem)`` with problem
        ``"panels_missing"`` or ``"panels_malformed"`` (not JSON, not a list, or an entry without a 4-number bbox).
        """
        data, problem = _read_json(self.panels_path)
        if problem is not None:
            return [], f"panels_{problem}"
        if not isinstance(data, list) or not all(_valid_panel(entry) for entry in data):
            return [], "panels_malformed"
        return [{"bbox": list(entry["bbox"]), "text": entry.get("text", "")} for entry in data], None


@dataclass(frozen=True)
class ComicBook:
    """A book folder: its id, its root URL, and its pages sorted by page number.

    Attributes:
        book_id: The folder's name.
        root: fsspec URL (plain path for local files) of the folder.
        pages: One :class:`PageRef` per page image, sorted by ``page_index``. Page numbers may have gaps when
            images are missing on disk; ``page_index`` is always the number in the file name.
    """

    book_id: str
    root: str
    pages: list[PageRef] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pages)

    @property
    def num_pages(self) -> int:
        """Pages present on disk."""
        return len(self.pages)

    def page(self, page_index: int) -> PageRef:
        """The page whose file name carries ``page_index``; KeyError naming the book when there is none."""
        for page in self.pages:
            if page.page_index == page_index:
                return page
        raise KeyError(f"book {self.book_id} has no page {page_index}")


def book_from_files(
    book_id: str, root: str, filenames: list[str], image_extensions: tuple[str, ...] = IMAGE_EXTENSIONS
) -> ComicBook:
    """A :class:`ComicBook` from the file names in its folder.

    Image names that are not a page number, or not one file name (``../0.jpg``, ``sub/0.jpg``: a page lies directly
    in its book's folder), are skipped with a warning; when two images carry the same number (``7.jpg`` and
    ``007.jpg``) the first in name order is kept, also with a warning.
    """
    extensions = tuple(ext.lower() for ext in image_extensions)
    by_index: dict[int, PageRef] = {}
    for name in sorted(filenames):
        if not name.lower().endswith(extensions):
            continue
        problem = component_problem(name)
        if problem is not None:
            logger.warning("book %s: image %r %s, not a file of the book's folder; ignored", book_id, name, problem)
            continue
        index = natural_page_index(name)
        if index is None:
            logger.warning("book %s: image %r has no page number in its name; ignored", book_id, name)
            continue
        if index in by_index:
            logger.warning(
                "book %s: %r and %r are both page %d; %r ignored",
                book_id, posixpath.basename(by_index[index].image_path), name, index, name,
            )
            continue
        by_index[index] = PageRef(book_id, index, posixpath.join(root, name))
    return ComicBook(book_id, root, [by_index[index] for index in sorted(by_index)])


def book_folder(root: str, book_id: str) -> str:
    """The folder of book ``book_id`` directly under ``root``.

    Raises:
        ValueError: When ``book_id`` is not one folder name (``..``, ``a/b``, an absolute path, …), so no book id
            ever resolves outside ``root``.
    """
    return posixpath.join(root, safe_component(book_id, "book id"))


def scan_books(
    root: str, image_extensions: tuple[str, ...] = IMAGE_EXTENSIONS, **fs_args: Any
) -> dict[str, ComicBook]:
    """All book folders directly under ``root`` (a path or fsspec URL), sorted by book id.

    Lists files only. Hidden folders and files at the top level are not books and are skipped, and so, with a
    warning, is a folder whose name is not a valid book id (see :func:`book_folder`); a folder with no page images
    gives a book with no pages (the caller decides whether that is a reject).
    """
    fs, base = fsspec.core.url_to_fs(root, **fs_args)
    if not fs.isdir(base):
        return {}
    # One recursive listing instead of one per book: cheap locally, and far fewer requests on object stores.
    files: dict[str, list[str]] = {}
    for entry in fs.ls(base, detail=True):
        name = posixpath.basename(entry["name"].rstrip("/"))
        if entry["type"] != "directory" or name.startswith("."):
            continue
        problem = component_problem(name)
        if problem is not None:
            logger.warning("%s: book folder %r %s, not a valid book id; skipped (rename the folder)", root, name,
                           problem)
            continue
        files[name] = []
    for path in fs.find(base, maxdepth=2):
        relative = posixpath.relpath(path, base.rstrip("/"))
        parts = relative.split("/")
        if len(parts) == 2 and parts[0] in files:
            files[parts[0]].append(parts[1])
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    local = "file" in protocols
    books = {}
    for book_id in sorted(files):
        folder = book_folder(base, book_id)
        url = folder if local else fs.unstrip_protocol(folder)
        books[book_id] = book_from_files(book_id, url, files[book_id], image_extensions)
    return books
