"""Atomic file writes: write to a temporary sibling, fsync, then rename over the target.

A reader never sees a half-written file: it sees the old file, or none, or the complete new one. The ``fs``
variants do the same on any fsspec filesystem (a remote target gets one upload, which object stores publish at
once).
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename it onto ``target`` on success.

    The temporary file is removed if the body raises, so a failed write leaves no debris and the old file intact.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    atomic_write_bytes(target, text.encode("utf-8"))


def atomic_write_json(target: str | os.PathLike, obj: Any, indent: int | None = 2) -> None:
    """Serialise ``obj`` as JSON and write it to ``target`` atomically."""
    atomic_write_text(target, json.dumps(obj, indent=indent, sort_keys=False, default=str))


@contextmanager
def atomic_fs_path(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[Path]:
    """Yield a local temporary path; publish it at ``path`` on ``fs`` in one step when the body succeeds.

    Local targets are renamed into place (``os.replace``); remote ones are uploaded in a single put, which
    object stores make visible all at once.
    """
    if isinstance(fs, LocalFileSystem):
        with atomic_path(path) as tmp:
            yield tmp
        return
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir) / PurePosixPath(path).name
        yield tmp
        fs.put_file(str(tmp), path)


def write_json_atomic(fs: fsspec.AbstractFileSystem, path: str, obj: Any) -> None:
    """Write ``obj`` as JSON at ``path`` on ``fs`` atomically."""
    if isinstance(fs, LocalFileSystem):
        atomic_write_json(path, obj)
        return
    with atomic_fs_path(fs, path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2), encoding="utf-8")
