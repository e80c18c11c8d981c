"""Tolerant, streaming reads of a webdataset collection: ``.tar`` shards, per-shard parquet metadata and a
separate folder of per-sample tag files.

Layout::

    <root>/shard-000000.tar        members <key>.jpg (or .png, .webp, …) + <key>.json, grouped by key
    <root>/shard-000000.parquet    optional, one row per sample: "key" + any columns (width, height, status, …)
    <tags>/<key>.json              optional, {"tags": ["red", "circle", …]} (a bare JSON list is accepted too)

A shard is read as a stream (``tarfile`` mode ``r|*``): nothing is extracted to disk and only the current
sample is in memory. Keys follow webdataset's rule (the member name up to the first dot of its base name, the
rest is the lower-cased extension), so the samples are the ones ``wds.WebDataset`` and Ray Data's
``read_webdataset`` see.

Real collections have broken members; reading never raises on them. Each problem is reported as a
:class:`SampleProblem` to the ``on_problem`` callback and reading goes on with what is readable:

* an image that does not decode, or a sample without an image member: that sample is skipped;
* a member whose sample key is not one file name (``../x.jpg``, ``/x.jpg``, ``dir/x.jpg``): that sample is skipped,
  since its key would name a tag file outside the tags folder;
* a file that is not a tar archive at all: reported under no sample key, nothing is read from it;
* a corrupt tar header: the reader resynchronises on the next valid header, so the rest of the shard is read;
* a truncated tar: every sample before the cut is read, the sample being read at the cut is skipped;
* a malformed ``<key>.json`` member or tag file: the sample is kept, without that part (the problem's reason says
  so: see :func:`kept_problem_code`);
* an unreadable parquet: the shard's samples are kept without their rows.

A missing tag file is not a problem: :attr:`Sample.tags` is ``None`` and the consumer decides what that means.
"""
from __future__ import annotations

import copy
import json
import logging
import posixpath
import re
import tarfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow.parquet as pq

from .images import DEFAULT_MAX_IMAGE_PIXELS, ImageDecodeError, verify_image
from .paths import component_problem, is_safe_component

logger = logging.getLogger(__name__)

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff")
METADATA_EXTENSION = "json"
BLOCK_SIZE = tarfile.BLOCKSIZE
# webdataset's base_plus_ext: key = everything up to the first dot of the base name.
_KEY_PATTERN = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
_STREAM_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error)
# How the reasons of problems with a sample that is still yielded end, and the reject codes they map to.
KEPT_WITHOUT_TAGS = "kept without tags"
KEPT_WITHOUT_METADATA = "kept without its metadata"
KEPT_FIRST_DUPLICATE = "the first one is kept"
_KEPT_CODES = {KEPT_WITHOUT_TAGS: "tags_unreadable", KEPT_WITHOUT_METADATA: "metadata_unreadable",
               KEPT_FIRST_DUPLICATE: "member_duplicate"}
PARQUET_UNREADABLE = "metadata parquet unreadable"


@dataclass(frozen=True)
class Sample:
    """One sample of a shard.

    Attributes:
        key: The sample key (member names ``<key>.<ext>``).
        shard: File name of the shard it came from (``shard-000000.tar``).
        image_bytes: The encoded image, as stored in the tar.
        image_ext: Extension of the image member (``jpg``, ``png``, …), lower case.
        meta: The parsed ``<key>.json`` member; ``None`` when absent or malformed.
        tags: Tags from ``<tags_dir>/<key>.json``; ``None`` when there is no tag file (or no tags folder).
        parquet_row: The sample's row of the shard's parquet as a dict; ``None`` without a parquet or row.
    """

    key: str
    shard: str
    image_bytes: bytes
    image_ext: str
    meta: dict[str, Any] | None
    tags: list[str] | None
    parquet_row: dict[str, Any] | None


@dataclass(frozen=True)
class SampleProblem:
    """Something in a shard that could not be read as it should; ``key`` is ``""`` when no sample is named."""

    shard: str
    key: str
    reason: str


ProblemHandler = Callable[[SampleProblem], None]


def split_member_name(name: str) -> tuple[str | None, str | None]:
    """``(key, extension)`` of a tar member name by webdataset's rule; ``(None, None)`` without an extension."""
    match = _KEY_PATTERN.match(name[2:] if name.startswith("./") else name)
    if not match:
        return None, None
    return match.group(1), match.group(2).lower()


def shard_stem(name: str) -> str:
    """The shard name without its tar suffix: ``shard-000000.tar`` → ``shard-000000``."""
    for suffix in sorted(SHARD_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def image_problem(data: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> str | None:
    """Why ``data`` is not a decodable image, or ``None`` when it decodes (:func:`~.images.verify_image`: JPEGs at
    1/8 scale, a header claiming more than ``max_pixels`` pixels refused before decoding)."""
    try:
        verify_image(data, max_pixels=max_pixels)
    except ImageDecodeError as error:
        return error.reason
    return None


def _log_problem(problem: SampleProblem) -> None:
    logger.warning("%s: %s%s", problem.shard, f"sample {problem.key}: " if problem.key else "", problem.reason)


class WebDatasetShards:
    """A lazy view of the shards under ``url``: listing happens once, samples are read when iterated.

    Args:
        url: Folder of the ``.tar`` shards; a local path or an fsspec URL (``s3://…``).
        shards: Shard file names to use, in this order; default: every ``*.tar`` (``.tar.gz``, ``.tgz``) file
            directly under ``url``, sorted by name.
        tags_url: Folder of ``<key>.json`` tag files; ``None`` when the collection has none.
        storage_options: Arguments for the fsspec filesystems (credentials, …).
        verify_images: Decode each image (cheaply, see :func:`image_problem`) and skip those that fail, so
            consumers only ever see decodable bytes. ``False`` skips the check.
        image_extensions: Member extensions that are images, in order of preference.
        metadata_key: Column of the parquet that holds the sample key.

    Examples:
        >>> shards = WebDatasetShards("data/01_raw/tagging_source", tags_url="data/01_raw/tagging_vlm_tags")
        >>> problems = []
        >>> for sample in shards.shard_range(0, 2).samples(on_problem=problems.append):
        ...     sample.key, sample.tags
        >>> # Ray Data reads the same files: ray.data.read_webdataset(shards.shard_paths())
    """

    def __init__(
        self,
        url: str,
        *,
        shards: Sequence[str] | None = None,
        tags_url: str | None = None,
        storage_options: dict[str, Any] | None = None,
        verify_images: bool = True,
        image_extensions: Sequence[str] = IMAGE_EXTENSIONS,
        metadata_key: str = "key",
    ) -> None:
        self._storage_options = dict(storage_options or {})
        self._fs, root = fsspec.core.url_to_fs(str(url), **self._storage_options)
        self._root = root.rstrip("/") or root
        self._url = str(url)
        self._tags_url = None if tags_url is None else str(tags_url)
        self._tags_fs, self._tags_root = (None, "")
        if self._tags_url is not None:
            self._tags_fs, tags_root = fsspec.core.url_to_fs(self._tags_url, **self._storage_options)
            self._tags_root = tags_root.rstrip("/") or tags_root
        self.verify_images = verify_images
        self.image_extensions = tuple(ext.lower().lstrip(".") for ext in image_extensions)
        self.metadata_key = metadata_key
        if shards is None:
            shards = self._list_shards()
        self._shards = list(shards)

    # -- selection and paths -------------------------------------------------------------------------------

    def _list_shards(self) -> list[str]:
        if not self._fs.isdir(self._root):
            raise FileNotFoundError(f"no shard folder at {self._url!r}")
        names = (posixpath.basename(path.rstrip("/")) for path in self._fs.ls(self._root, detail=False))
        return sorted(name for name in names if name.endswith(SHARD_SUFFIXES) and not name.startswith("."))

    @property
    def shards(self) -> list[str]:
        """Shard file names, in reading order."""
        return list(self._shards)

    def __len__(self) -> int:
        return len(self._shards)

    def __repr__(self) -> str:
        return f"WebDatasetShards({self._url!r}, {len(self._shards)} shards, tags={self._tags_url!r})"

    @property
    def url(self) -> str:
        """The shard folder, as given."""
        return self._url

    @property
    def filesystem(self) -> fsspec.AbstractFileSystem:
        """The fsspec filesystem of the shards (for readers that take one, such as Ray Data)."""
        return self._fs

    def shard_range(self, start: int | None = None, end: int | None = None) -> WebDatasetShards:
        """The shards at positions ``start`` (inclusive) to ``end`` (exclusive) of :attr:`shards`.

        Positions index the sorted shard list, not the numbers in the names (they coincide for a collection
        numbered from ``shard-000000`` without gaps). ``None`` means "from the first" / "to the last"; an ``end``
        past the last shard stops at the last one, like a slice.

        Raises:
            ValueError: When ``start`` or ``end`` is negative, or ``start > end``.
        """
        start = 0 if start is None else int(start)
        end = len(self._shards) if end is None else int(end)
        if start < 0 or end < 0 or start > end:
            raise ValueError(f"shard range needs 0 <= start <= end, got start={start}, end={end}")
        view = copy.copy(self)
        view._shards = self._shards[start:end]
        return view

    def _full_path(self, name: str) -> str:
        return posixpath.join(self._root, name)

    def _url_of(self, path: str) -> str:
        protocol = self._fs.protocol if isinstance(self._fs.protocol, str) else self._fs.protocol[0]
        return path if protocol in ("file", "local") else self._fs.unstrip_protocol(path)

    def _check_shard(self, name: str) -> None:
        if name not in self._shards:
            raise KeyError(f"{name!r} is not one of the {len(self._shards)} shards of this view ({self._url})")

    def shard_path(self, name: str) -> str:
        """Full path of shard ``name``: a local path, or a URL with its protocol for remote storage."""
        self._check_shard(name)
        return self._url_of(self._full_path(name))

    def shard_paths(self) -> list[str]:
        """:meth:`shard_path` of every shard in the view, in order."""
        return [self.shard_path(name) for name in self._shards]

    def parquet_path(self, name: str) -> str:
        """Full path where shard ``name``'s metadata parquet is (or would be): ``<stem>.parquet``."""
        self._check_shard(name)
        return self._url_of(self._full_path(shard_stem(name) + ".parquet"))

    # -- metadata --------------------------------------------------------------------------------------------

    def metadata_rows(self, name: str) -> dict[str, dict[str, Any]] | None:
        """Shard ``name``'s parquet rows by key, or ``None`` when the shard has no parquet.

        Raises:
            OSError, pyarrow.ArrowException, KeyError: When the parquet cannot be read or lacks the key column.
        """
        self._check_shard(name)
        path = self._full_path(shard_stem(name) + ".parquet")
        if not self._fs.exists(path):
            return None
        with self._fs.open(path, "rb") as handle:
            rows = pq.ParquetFile(handle).read().to_pylist()
        if rows and self.metadata_key not in rows[0]:
            raise KeyError(f"column {self.metadata_key!r} missing (columns: {sorted(rows[0])})")
        return {str(row[self.metadata_key]): row for row in rows}

    def parquet_num_rows(self, name: str) -> int | None:
        """Row count of shard ``name``'s parquet from its footer (no data read); ``None`` without a parquet."""
        self._check_shard(name)
        path = self._full_path(shard_stem(name) + ".parquet")
        if not self._fs.exists(path):
            return None
        with self._fs.open(path, "rb") as handle:
            return int(pq.ParquetFile(handle).metadata.num_rows)

    def count_keys(self, name: str) -> int:
        """Distinct sample keys among the member headers of shard ``name`` (a truncated shard counts what is
        left). Member data is skipped by seeking, not read."""
        self._check_shard(name)
        keys: set[str] = set()
        try:
            with self._fs.open(self._full_path(name), "rb") as handle, tarfile.open(
                fileobj=handle, mode="r:*", ignore_zeros=True
            ) as tar:
                for member in tar:
                    key, _ = split_member_name(member.name)
                    if member.isreg() and key is not None:
                        keys.add(key)
        except _STREAM_ERRORS:
            pass  # counting stops where the archive stops being readable
        return len(keys)

    def read_tags(self, key: str) -> list[str] | None:
        """Tags of sample ``key`` from the tags folder; ``None`` when there is no tag file.

        Raises:
            ValueError: When ``key`` is not one file name (its tag file would lie outside the tags folder, so none
                is opened), or the file is not JSON, or neither ``{"tags": [...]}`` nor a list.
        """
        if self._tags_fs is None:
            return None
        problem = component_problem(key)
        if problem is not None:
            raise ValueError(f"sample key {key!r} {problem}, so it names no tag file in {self._tags_url}")
        try:
            data = self._tags_fs.cat_file(posixpath.join(self._tags_root, f"{key}.json"))
        except FileNotFoundError:
            return None
        try:
            value = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"tag file {key}.json is not valid JSON ({error})") from error
        if isinstance(value, dict):
            value = value.get("tags")
        if not isinstance(value, list):
            raise ValueError(f'tag file {key}.json holds neither {{"tags": [...]}} nor a list')
        return [str(tag) for tag in value]

    # -- streaming -------------------------------------------------------------------------------------------

    def samples(self, on_problem: ProblemHandler | None = None) -> Iterator[Sample]:
        """Every sample of every shard in the view, shard by shard (see :meth:`iter_samples`)."""
        for name in self._shards:
            yield from self.iter_samples(name, on_problem=on_problem)

    def iter_samples(self, shard_name: str, on_problem: ProblemHandler | None = None) -> Iterator[Sample]:
        """Stream the samples of one shard, in tar order, without extracting anything.

        Args:
            shard_name: One of :attr:`shards`.
            on_problem: Called with a :class:`SampleProblem` for each problem met (see the module docstring);
                default: each problem is logged as a warning. Either way reading goes on.

        Returns:
            An iterator of each readable :class:`Sample`.

        Raises:
            KeyError: At once (not on the first ``next``) when ``shard_name`` is not in the view.
        """
        self._check_shard(shard_name)
        return self._iter_samples(shard_name, on_problem or _log_problem)

    def _iter_samples(self, shard_name: str, report: ProblemHandler) -> Iterator[Sample]:
        try:
            rows = self.metadata_rows(shard_name) or {}
        except Exception as error:  # noqa: BLE001 - any unreadable parquet only costs the rows
            report(SampleProblem(shard_name, "", f"{PARQUET_UNREADABLE} ({type(error).__name__}: {error}); "
                                 "samples kept without their rows"))
            rows = {}
        yielded = skipped = 0
        for key, members in self._member_groups(shard_name, report):
            sample = self._to_sample(shard_name, key, members, rows.get(key), report)
            if sample is None:
                skipped += 1
                continue
            yielded += 1
            yield sample
        logger.debug("%s: %d samples read, %d skipped", shard_name, yielded, skipped)

    def _member_groups(self, shard: str, report: ProblemHandler) -> Iterator[tuple[str, dict[str, bytes]]]:
        """``(key, {extension: bytes})`` per run of consecutive members with the same key."""
        key: str | None = None
        members: dict[str, bytes] = {}
        member_name = ""
        expected_offset = 0  # where the next header starts if nothing between members was skipped
        headers = 0
        unsafe_keys: set[str] = set()
        try:
            with self._fs.open(self._full_path(shard), "rb") as handle, tarfile.open(
                fileobj=handle, mode="r|*", ignore_zeros=True  # ignore_zeros: resynchronise after a bad header
            ) as tar:
                for info in tar:
                    if info.offset > expected_offset:
                        report(SampleProblem(shard, "", f"{info.offset - expected_offset} bytes before member "
                                             f"{info.name!r} are not a readable tar header (a corrupt header, or the "
                                             "end of a concatenated archive); skipped to the next valid one"))
                    expected_offset = info.offset_data + -(-info.size // BLOCK_SIZE) * BLOCK_SIZE
                    member_name = info.name
                    headers += 1
                    if not info.isreg():
                        continue
                    member_key, extension = split_member_name(info.name)
                    if member_key is None or extension is None:
                        continue
                    if not is_safe_component(member_key):
                        if member_key not in unsafe_keys:
                            unsafe_keys.add(member_key)
                            report(SampleProblem(shard, member_key, f"member {info.name!r}: sample key "
                                                 f"{member_key!r} {component_problem(member_key)}, not one file name "
                                                 "(a key names its tag file <tags>/<key>.json); skipped"))
                        continue
                    if member_key != key:
                        if key is not None:
                            yield key, members
                        key, members = member_key, {}
                    handle_data = tar.extractfile(info)
                    data = handle_data.read() if handle_data is not None else b""
                    if extension in members:
                        report(SampleProblem(shard, key, f"duplicate member {info.name!r}; {KEPT_FIRST_DUPLICATE}"))
                        continue
                    members[extension] = data
                if tar.offset <= expected_offset and expected_offset > 0:
                    # a complete archive ends with zero blocks past the last member's data
                    raise tarfile.ReadError(f"archive ends after member {member_name!r} without an end marker")
        except _STREAM_ERRORS as error:
            lost = f"sample {key} is incomplete and " if key is not None else ""
            report(SampleProblem(shard, key or "", f"tar truncated or unreadable ({type(error).__name__}: {error}) "
                                 f"after member {member_name!r}; {lost}the rest of the shard is lost"))
            return
        if key is not None:
            yield key, members
        elif not headers:
            problem = self._first_header_error(shard)
            if problem is not None:
                report(SampleProblem(shard, "", f"not a tar archive: no readable member header in it ({problem}); "
                                     "nothing of the shard was read"))

    def _first_header_error(self, shard: str) -> str | None:
        """Why the start of ``shard`` is not a tar header, or ``None`` when it is one (an empty archive's end
        marker included). Reading with ``ignore_zeros`` skips invalid headers silently, so a file of random bytes
        reads as an archive with no members; this strict read tells the two apart."""
        try:
            with self._fs.open(self._full_path(shard), "rb") as handle, tarfile.open(fileobj=handle, mode="r|*"):
                pass  # opening reads the first header
        except _STREAM_ERRORS as error:
            return f"{type(error).__name__}: {error}"
        return None

    def _to_sample(
        self, shard: str, key: str, members: dict[str, bytes], row: dict[str, Any] | None, report: ProblemHandler
    ) -> Sample | None:
        image_ext = next((ext for ext in self.image_extensions if ext in members), None)
        if image_ext is None:
            report(SampleProblem(shard, key, f"no image member (members: {sorted(members)}); skipped"))
            return None
        image_bytes = members[image_ext]
        if self.verify_images:
            problem = image_problem(image_bytes)
            if problem is not None:
                report(SampleProblem(shard, key, f"image {key}.{image_ext} does not decode ({problem}); skipped"))
                return None
        meta = None
        if METADATA_EXTENSION in members:
            try:
                meta = json.loads(members[METADATA_EXTENSION])
                if not isinstance(meta, dict):
                    raise ValueError(f"a JSON {type(meta).__name__}, not an object")
            except (UnicodeDecodeError, ValueError) as error:
                report(SampleProblem(shard, key,
                                     f"metadata {key}.json unreadable ({error}); {KEPT_WITHOUT_METADATA}"))
                meta = None
        try:
            tags = self.read_tags(key)
        except (ValueError, OSError) as error:
            report(SampleProblem(shard, key, f"{error}; {KEPT_WITHOUT_TAGS}"))
            tags = None
        return Sample(key, shard, image_bytes, image_ext, meta, tags, row)


def problem_sample_key(problem: SampleProblem, number: int) -> str:
    """The sample key an error row is filed under; a problem that names no sample gets a numbered placeholder."""
    return problem.key or f"{problem.shard}#unreadable-{number}"


def is_shard_problem_key(key: str, shard: str) -> bool:
    """Whether ``key`` is a placeholder for a problem of ``shard`` itself rather than of one of its samples (no
    real key starts so: a key holds no dot, a shard name does)."""
    return key.startswith(f"{shard}#")


def kept_problem_code(reason: str) -> str | None:
    """``"tags_unreadable"``, ``"metadata_unreadable"`` or ``"member_duplicate"`` when ``reason`` is about a sample
    that was still read (a malformed tag file or metadata member, a member stored twice); ``None`` otherwise."""
    return next((code for ending, code in _KEPT_CODES.items() if ending in reason), None)


def shard_problems(
    view: WebDatasetShards, shard: str, problems: Sequence[SampleProblem], seen: set[str]
) -> dict[str, str]:
    """``{sample key: reason}`` for every sample of ``shard`` that was not read, or read with a problem (a key in
    ``seen``; see :func:`kept_problem_code`): the reader's problems (reasons of a sample reported more than once
    joined by "; "; problems of the shard itself under :func:`is_shard_problem_key` placeholders), and samples the
    shard's parquet lists as downloaded that the tar does not hold (lost to a truncated archive)."""
    merged: dict[str, list[str]] = {}
    for number, problem in enumerate(problems):
        merged.setdefault(problem_sample_key(problem, number), []).append(problem.reason)
    try:
        listed = view.metadata_rows(shard) or {}
    except Exception as error:  # noqa: BLE001 - an unreadable parquet must not stop the shard's samples
        if not any(problem.reason.startswith(PARQUET_UNREADABLE) for problem in problems):
            merged.setdefault(f"{shard}#parquet", []).append(f"{PARQUET_UNREADABLE}: {type(error).__name__}")
        listed = {}
    for key, row in listed.items():
        if key not in seen and key not in merged and row.get("status", "success") == "success":
            merged[key] = ["listed in the shard's parquet but not in the tar (truncated or corrupt archive)"]
    return {key: "; ".join(dict.fromkeys(reasons)) for key, reasons in merged.items()}
