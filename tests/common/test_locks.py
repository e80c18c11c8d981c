"""FileLock: mutual exclusion between processes, the stale-lock rule, waiting for a live owner."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pytest

import multimodal_suite.common.locks as locks_module
from multimodal_suite.common.locks import (
    STALE_AFTER_S,
    FileLock,
    LockLostError,
    LockTimeoutError,
    Owner,
    is_stale,
    pid_alive,
    this_host,
)

LOCAL = fsspec.filesystem("file")

# Read-modify-write of a counter file under the lock, with a pause between read and write that invites a race.
INCREMENTER = """
import sys, time
import fsspec
from multimodal_suite.common.locks import FileLock
lock_path, counter, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
print("ready", flush=True)
sys.stdin.readline()
for _ in range(rounds):
    with FileLock(fsspec.filesystem("file"), lock_path):
        value = int(open(counter).read())
        time.sleep(0.001)
        open(counter, "w").write(str(value + 1))
print("done", flush=True)
"""


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_two_processes_never_hold_the_lock_at_once(tmp_path: Path) -> None:
    counter = tmp_path / "counter"
    counter.write_text("0")
    rounds = 200
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", INCREMENTER, str(tmp_path / "counter.lock"), str(counter), str(rounds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    for worker in workers:
        assert worker.stdout.readline().strip() == "ready", worker.stderr.read()[-3000:]
    for worker in workers:
        worker.stdin.write("go\n")
        worker.stdin.flush()
    # the limit only keeps a hung worker from hanging the suite
    for worker in workers:
        stdout, stderr = worker.communicate(timeout=1800)
        assert worker.returncode == 0 and stdout.strip() == "done", stderr[-3000:]
    assert counter.read_text() == str(2 * rounds)
    assert not (tmp_path / "counter.lock").exists()


@pytest.mark.parametrize(
    ("owner", "age_s", "stale"),
    [
        ("live-here", 1.0, False),
        ("live-here", STALE_AFTER_S + 1, True),
        ("dead-here", 1.0, True),
        ("elsewhere", 1.0, False),
        ("elsewhere", STALE_AFTER_S + 1, True),
        ("unknown", 1.0, False),
        ("unknown", STALE_AFTER_S + 1, True),
    ],
)
def test_stale_rule(owner: str, age_s: float, stale: bool) -> None:
    pid, host = {
        "live-here": (os.getpid(), this_host()),
        "dead-here": (dead_pid(), this_host()),
        # a pid that is dead here says nothing about a process on another host
        "elsewhere": (dead_pid(), "another-host"),
        "unknown": (None, None),
    }[owner]
    assert is_stale(pid, host, age_s) is stale


def test_a_killed_but_unreaped_process_counts_as_dead() -> None:
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    assert pid_alive(process.pid)
    process.kill()
    while not is_zombie(process.pid):
        time.sleep(0.05)
    assert not pid_alive(process.pid)
    process.wait()


def is_zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and waits to be reaped (this test reaps its child only after the assert)."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        return handle.read().rsplit(b")", 1)[1].split()[0] == b"Z"


def test_a_live_lock_is_respected(tmp_path: Path) -> None:
    path = str(tmp_path / "store.lock")
    holder = FileLock(LOCAL, path)
    holder.acquire()
    with pytest.raises(LockTimeoutError, match=rf"held by pid {os.getpid()} on "):
        FileLock(LOCAL, path).acquire(timeout_s=0.2)
    assert Owner.from_bytes(Path(path).read_bytes()) == holder.owner
    holder.check()
    holder.release()
    assert not Path(path).exists()


@pytest.mark.parametrize("stale_by", ["dead-owner", "age"])
def test_a_stale_lock_is_broken(tmp_path: Path, stale_by: str) -> None:
    path = tmp_path / "store.lock"
    if stale_by == "dead-owner":
        stale = Owner(pid=dead_pid(), host=this_host(), time=time.time(), token="gone")
    else:
        stale = Owner(pid=os.getpid(), host="another-host", time=time.time() - STALE_AFTER_S - 60, token="old")
    path.write_bytes(stale.to_bytes())
    with FileLock(LOCAL, str(path), timeout_s=0) as lock:
        assert Owner.from_bytes(path.read_bytes()) == lock.owner != stale
    assert not path.exists()


def test_an_empty_lock_file_is_judged_by_its_age(tmp_path: Path) -> None:
    # the instant between the exclusive create and the write of its owner
    path = tmp_path / "store.lock"
    path.write_bytes(b"")
    with pytest.raises(LockTimeoutError, match="a writer still creating it"):
        FileLock(LOCAL, str(path)).acquire(timeout_s=0)
    long_ago = time.time() - STALE_AFTER_S - 60
    os.utime(path, (long_ago, long_ago))
    with FileLock(LOCAL, str(path), timeout_s=0) as lock:
        assert lock.owner is not None
    assert not path.exists()


def test_a_holder_whose_lock_was_broken_finds_out_and_leaves_the_new_lock(tmp_path: Path) -> None:
    path = tmp_path / "store.lock"
    lock = FileLock(LOCAL, str(path))
    lock.acquire()
    newcomer = Owner(pid=os.getpid(), host=this_host(), time=time.time(), token="newcomer")
    path.write_bytes(newcomer.to_bytes())
    with pytest.raises(LockLostError, match=f"now held by pid {os.getpid()}"):
        lock.check()
    lock.release()
    assert Owner.from_bytes(path.read_bytes()) == newcomer


def test_waiting_backs_off_and_gives_up_at_its_deadline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "store.lock")
    holder = FileLock(LOCAL, path)
    holder.acquire()
    now = [0.0]
    pauses: list[float] = []

    def fake_sleep(seconds: float) -> None:
        pauses.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(locks_module.time, "sleep", fake_sleep)
    monkeypatch.setattr(locks_module.time, "monotonic", lambda: now[0])
    with pytest.raises(LockTimeoutError):
        FileLock(LOCAL, path, poll_s=0.1, max_poll_s=1.0).acquire(timeout_s=5.0)
    assert len(pauses) > 3 and max(pauses) <= 1.5 and pauses[2] > pauses[0]  # doubling, capped, jittered
    assert sum(pauses) == pytest.approx(5.0)
    holder.release()


def test_works_on_a_non_local_filesystem() -> None:
    memory = fsspec.filesystem("memory")
    path = "/locks-test/store.lock"
    with FileLock(memory, path) as lock:
        with pytest.raises(LockTimeoutError):
            FileLock(memory, path).acquire(timeout_s=0)
        lock.check()
    assert not memory.exists(path)
