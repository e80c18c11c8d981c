"""Atomic file writes: write to a temporary sibling, fsync, then rename over the target.

A reader never sees a half-written file: it sees the old file, or none, or the complete new one. The ``fs``
variants do the same on any fsspec filesystem (a remote target gets one upload, which object stores publish at
once).

A temporary sibling is named ``.<target name>.<pid>@<host>.<random>.tmp``, so a process that was killed
mid-write leaves debris that :func:`remove_stale_temporaries` can tell apart from a live writer's file.
"""
from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem

from multimodal_suite.common.locks import STALE_AFTER_S, modified_age_s, pid_alive, this_host

logger = logging.getLogger(__name__)

# mkstemp's random part is drawn from [a-z0-9_]; the owner tag is optional so older debris is recognised too
_TEMPORARY_PATTERN = re.compile(r"^\.(?P<target>.+?)\.(?:(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]*)\.)?[a-z0-9_]+\.tmp$")


def host_tag(host: str) -> str:
    """``host`` as it appears in temporary file names: no dots, so the name still splits unambiguously."""
    return re.sub(r"[^A-Za-z0-9-]", "-", host)[:63]


def temporary_prefix(target_name: str) -> str:
    """The name start of this process's temporary siblings of ``target_name``."""
    return f".{target_name}.{os.getpid()}@{host_tag(this_host())}."


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; rename it onto ``target`` on success.

    The temporary file is removed if the body raises, so a failed write leaves no debris and the old file intact.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=temporary_prefix(target.name), suffix=".tmp", dir=target.parent)
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


def is_stale_temporary(fs: fsspec.AbstractFileSystem, path: str, stale_after_s: float = STALE_AFTER_S) -> bool:
    """Whether ``path`` is a temporary sibling (see :func:`atomic_path`) left by a writer that is gone.

    A file of a live process on this host is never stale; one of a dead process on this host always is; one
    from another host, or without an owner tag, is stale once it is older than ``stale_after_s``.
    """
    match = _TEMPORARY_PATTERN.match(PurePosixPath(path).name)
    if match is None:
        return False
    if match["pid"] and match["host"] == host_tag(this_host()):
        return not pid_alive(int(match["pid"]))
    return modified_age_s(fs, path) > stale_after_s


def remove_stale_temporaries(
    fs: fsspec.AbstractFileSystem, directory: str, stale_after_s: float = STALE_AFTER_S
) -> list[str]:
    """Delete the stale temporary siblings in ``directory`` (not in subfolders); returns the paths removed."""
    try:
        entries = fs.ls(directory, detail=False)
    except FileNotFoundError:
        return []
    removed = []
    for entry in entries:
        path = str(entry).rstrip("/")
        if is_stale_temporary(fs, path, stale_after_s):
            try:
                fs.rm_file(path)
            except FileNotFoundError:  # another cleaner was first
                continue
            removed.append(path)
    if removed:
        logger.info("%s: removed %d temporary file(s) left by interrupted writes: %s",
                    directory, len(removed), [PurePosixPath(p).name for p in removed][:5])
    return removed
