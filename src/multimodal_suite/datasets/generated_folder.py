"""Writing generated sample files into a folder that must never be a real collection (shared by the sample
datasets; no dataset class here).

A generated folder carries a ``.sample_data`` marker. Writing into a non-empty folder without one is refused, so
generated samples never overwrite a user's data; writing into a marked folder first clears what the previous
generation left.
"""
from __future__ import annotations

import posixpath
from typing import Any, Callable, Mapping

import fsspec
from kedro.io.core import DatasetError

from multimodal_suite.common.atomic import atomic_write_bytes

SAMPLE_MARKER = ".sample_data"


def write_bytes(fs: fsspec.AbstractFileSystem, protocol: str, path: str, data: bytes) -> None:
    """Write one file atomically: temp file + rename locally; object stores replace whole objects anyway."""
    if protocol == "file":
        atomic_write_bytes(path, data)
    else:
        fs.pipe_file(path, data)


def prepare_generated_folder(
    fs: fsspec.AbstractFileSystem,
    protocol: str,
    root: str,
    *,
    described_as: str,
    marker_text: bytes,
    clear: Callable[[Mapping[str, Any]], bool],
) -> None:
    """Check ``root`` may receive generated files, delete the entries ``clear`` selects, and mark the folder.

    Args:
        fs, protocol, root: the folder, on its filesystem.
        described_as: what is written, for the refusal message ("sample books").
        marker_text: contents of the marker file.
        clear: given an ``fs.ls(detail=True)`` entry of the folder, whether to delete it before writing.

    Raises:
        DatasetError: the folder holds entries but no marker.
    """
    marker = posixpath.join(root, SAMPLE_MARKER)
    if fs.isdir(root):
        fs.invalidate_cache(root)
        entries = fs.ls(root, detail=True)
        if entries and not fs.exists(marker):
            raise DatasetError(
                f"{root} holds files that were not generated here (no {SAMPLE_MARKER} marker); refusing to write "
                f"{described_as} over them. Point the catalog entry at an empty folder, or delete the folder if it "
                "really holds only samples."
            )
        for entry in entries:
            if posixpath.basename(entry["name"].rstrip("/")) != SAMPLE_MARKER and clear(entry):
                fs.rm(entry["name"], recursive=entry["type"] == "directory")
    else:
        fs.makedirs(root, exist_ok=True)
    # Written before the files, so an interrupted save leaves a folder that the next save may clear.
    write_bytes(fs, protocol, marker, marker_text)
