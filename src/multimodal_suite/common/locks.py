"""Inter-process lock files on any fsspec filesystem, with a rule for breaking the lock of a writer that died.

A lock is a small JSON file (owner pid, host, time taken, a random token) created with an exclusive create
(``fs.open(path, "xb")``: ``O_EXCL`` locally and on NFS, a conditional put on object stores that offer one), so
of two processes that try at once exactly one gets it. Nothing has to run in the background and nothing depends
on the lock being released by the operating system, which remote filesystems cannot do.

A lock is stale, and is broken by the next process that wants it, when its owner is a dead process on this host,
or when it is older than ``stale_after_s`` (an owner on another host, or a hung one). A holder can
:meth:`FileLock.check` before it commits, so one whose lock was broken fails instead of racing the new holder.
"""
from __future__ import annotations

import json
import logging
import os
import posixpath
import random
import secrets
import socket
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from types import TracebackType

import fsspec

logger = logging.getLogger(__name__)

STALE_AFTER_S = 600.0
"""Age after which a lock (or temporary file) of a live-looking owner is presumed abandoned; far longer than
any one locked step (writing one part of a store) takes on a loaded machine."""


class LockTimeoutError(TimeoutError):
    """The lock stayed held by a live owner for longer than the caller was willing to wait."""


class LockLostError(RuntimeError):
    """The lock file no longer names this holder: another process broke it as stale."""


def this_host() -> str:
    """The host name recorded in lock files, so pids are only compared on the host they belong to."""
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie, killed but not yet reaped, counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            # "pid (comm) state ...": comm may contain spaces and parentheses, the state follows the last ")"
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):  # no /proc (macOS): os.kill's answer stands
        return True


@dataclass(frozen=True)
class Owner:
    """Who holds a lock: ``pid`` on ``host`` since ``time`` (seconds since the epoch); ``token`` tells holders
    apart when a pid is reused."""

    pid: int
    host: str
    time: float
    token: str

    @classmethod
    def current(cls) -> Owner:
        return cls(pid=os.getpid(), host=this_host(), time=time.time(), token=secrets.token_hex(8))

    @classmethod
    def from_bytes(cls, raw: bytes) -> Owner | None:
        """The owner written in a lock file, or None for an empty or unreadable one (still being written)."""
        try:
            fields = json.loads(raw)
            return cls(pid=int(fields["pid"]), host=str(fields["host"]), time=float(fields["time"]),
                       token=str(fields["token"]))
        except (ValueError, KeyError, TypeError):
            return None

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode("utf-8")

    def describe(self) -> str:
        since = datetime.fromtimestamp(self.time, tz=timezone.utc).isoformat(timespec="seconds")
        return f"pid {self.pid} on {self.host} since {since}"


def is_stale(pid: int | None, host: str | None, age_s: float, stale_after_s: float = STALE_AFTER_S) -> bool:
    """The stale rule shared by lock files and temporary files: the owner is a dead process on this host, or the
    thing is older than ``stale_after_s``. An unknown owner (``pid`` None) is judged by age alone."""
    if pid is not None and host == this_host() and not pid_alive(pid):
        return True
    return age_s > stale_after_s


def modified_age_s(fs: fsspec.AbstractFileSystem, path: str) -> float:
    """Seconds since ``path`` was last modified; 0 where the filesystem does not say (never stale by age)."""
    try:
        modified = fs.modified(path)
    except (NotImplementedError, OSError, KeyError):
        return 0.0
    if modified.tzinfo is None:
        modified = modified.replace(tzinfo=timezone.utc)
    return max(0.0, time.time() - modified.timestamp())


class FileLock:
    """An exclusive lock held by creating ``path`` on ``fs``; use as a context manager.

    Not re-entrant: a second ``FileLock`` on the same path waits, even in the same process.

    Args:
        fs: the filesystem that holds ``path``.
        path: the lock file (fsspec path without protocol).
        stale_after_s: age after which a lock of a live-looking owner is broken.
        timeout_s: how long ``__enter__`` waits for a live owner; None waits until the lock is free or stale.
        poll_s: first wait between attempts; it doubles up to ``max_poll_s``, with jitter so waiters interleave.
    """

    def __init__(  # noqa: PLR0913
        self,
        fs: fsspec.AbstractFileSystem,
        path: str,
        *,
        stale_after_s: float = STALE_AFTER_S,
        timeout_s: float | None = None,
        poll_s: float = 0.02,
        max_poll_s: float = 1.0,
    ) -> None:
        self.fs = fs
        self.path = path
        self.stale_after_s = stale_after_s
        self.timeout_s = timeout_s
        self.poll_s = poll_s
        self.max_poll_s = max_poll_s
        self.owner: Owner | None = None

    def __enter__(self) -> FileLock:
        self.acquire(self.timeout_s)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def acquire(self, timeout_s: float | None = None) -> None:
        """Take the lock, breaking a stale one; wait while a live owner holds it.

        Raises:
            LockTimeoutError: still held by a live owner after ``timeout_s``.
        """
        if self.owner is not None:
            raise RuntimeError(f"{self.path}: this lock is already held by this FileLock")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        delay = self.poll_s
        self.fs.makedirs(posixpath.dirname(self.path) or ".", exist_ok=True)
        reported = False
        while True:
            owner = Owner.current()
            if self._create(owner):
                self.owner = owner
                return
            held = self._read()
            if held is None:  # released between our attempt and the read
                continue
            raw, holder, age_s = held
            if is_stale(holder.pid if holder else None, holder.host if holder else None, age_s, self.stale_after_s):
                self._break(raw, holder, age_s)
                continue
            if deadline is not None and time.monotonic() >= deadline:
                raise LockTimeoutError(
                    f"{self.path} is held by {holder.describe() if holder else 'a writer still creating it'}; "
                    f"gave up after {timeout_s:g} s. It is broken automatically once its owner dies or after "
                    f"{self.stale_after_s:g} s."
                )
            if not reported:
                logger.info("%s: waiting for the lock held by %s", self.path,
                            holder.describe() if holder else "a writer still creating it")
                reported = True
            pause = delay * random.uniform(0.5, 1.5)
            if deadline is not None:
                pause = max(0.0, min(pause, deadline - time.monotonic()))
            time.sleep(pause)
            delay = min(delay * 2, self.max_poll_s)

    def release(self) -> None:
        """Remove the lock file if it still names this holder; a lock broken by another process is left alone."""
        owner, self.owner = self.owner, None
        if owner is None:
            return
        held = self._read()
        if held is not None and held[1] is not None and held[1].token == owner.token:
            self._remove()
        else:
            logger.warning("%s: the lock was broken by another process while this one held it", self.path)

    def check(self) -> None:
        """Raise :class:`LockLostError` unless the lock file still names this holder (call before committing)."""
        held = self._read()
        holder = held[1] if held is not None else None
        if self.owner is None or holder is None or holder.token != self.owner.token:
            taken_by = holder.describe() if holder is not None else "nobody"
            raise LockLostError(
                f"{self.path}: lost the lock (now held by {taken_by}); this step took longer than "
                f"{self.stale_after_s:g} s, so another process broke it as stale"
            )

    def _create(self, owner: Owner) -> bool:
        try:
            with self.fs.open(self.path, "xb") as handle:
                handle.write(owner.to_bytes())
        except FileExistsError:
            return False
        return True

    def _read(self) -> tuple[bytes, Owner | None, float] | None:
        """The lock file's bytes, its owner and its age; None when there is no lock file."""
        try:
            raw = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None
        owner = Owner.from_bytes(raw)
        age_s = time.time() - owner.time if owner is not None else modified_age_s(self.fs, self.path)
        return raw, owner, age_s

    def _break(self, raw: bytes, holder: Owner | None, age_s: float) -> None:
        # only the lock judged stale is removed: if it was replaced in the meantime, the new one stands
        held = self._read()
        if held is None or held[0] != raw:
            return
        reason = (
            "its owner is gone" if holder is not None and holder.host == this_host() and not pid_alive(holder.pid)
            else f"it is {age_s:.0f} s old"
        )
        logger.warning("%s: breaking the stale lock of %s (%s)", self.path,
                       holder.describe() if holder else "an unknown writer", reason)
        self._remove()

    def _remove(self) -> None:
        try:
            self.fs.rm_file(self.path)
        except FileNotFoundError:
            pass
