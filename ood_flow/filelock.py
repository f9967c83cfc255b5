"""Exclusive locks on lock files, for :func:`ood_flow.fileio.file_lock`.

``flock`` on a lock file: the kernel releases it when its process ends, however it ends, so a
killed writer never leaves a lock that blocks the next one. Re-entrant within a thread (a
read-modify-replace under one lock); other threads and processes wait.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Iterator

from ood_flow.errors import OutputError

log = logging.getLogger("ood_flow")



_held: dict[str, list] = {}  # lock file -> [fd, depth] for the locks this process holds
_held_guard = threading.Lock()
_thread_locks: dict[str, threading.RLock] = {}


@contextlib.contextmanager
def hold(lock: Path, shown: Path, *, timeout: float | None = 600.0) -> Iterator[None]:
    """Hold an exclusive lock on the lock file ``lock`` (``shown``: the file it guards, for messages).

    The kernel releases the lock when its process ends, however it ends, so a killed writer never
    leaves a lock that blocks the next one. Re-entrant within a thread; other threads and processes
    wait, at most ``timeout`` seconds (None: no limit; 0: fail at once if it is held).

    Raises:
        OutputError: the lock is held elsewhere past ``timeout``, or the folder is not writable.
    """
    key = os.fspath(lock)
    with _held_guard:
        rlock = _thread_locks.setdefault(key, threading.RLock())
    if not rlock.acquire(timeout=-1 if timeout is None else timeout):
        raise OutputError(f"{shown}: in use by another thread of this process")
    try:
        if key in _held:
            _held[key][1] += 1
        else:
            _held[key] = [_acquire(lock, shown, timeout), 1]
        try:
            yield
        finally:
            _held[key][1] -= 1
            if _held[key][1] == 0:
                _release(lock, _held.pop(key)[0])
    finally:
        rlock.release()


def _acquire(lock: Path, shown: Path, timeout: float | None) -> int:
    import fcntl

    deadline, told = None if timeout is None else time.monotonic() + timeout, False
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as exc:
            raise OutputError(f"{shown}: cannot write in {lock.parent}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            if deadline is not None and time.monotonic() >= deadline:
                raise OutputError(f"{shown} is being written by process {holder} (lock {lock.name}); "
                                  "try again when it has finished") from None
            if not told:
                log.warning("waiting for %s: process %s is writing it", shown, holder)
                told = True
            time.sleep(0.05)
            continue
        if _same_file(fd, lock):  # else the holder removed it on release: lock the new one
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


def _same_file(fd: int, lock: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(lock).st_ino
    except FileNotFoundError:
        return False


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode().strip() or "?"
    except OSError:
        return "?"


def _release(lock: Path, fd: int) -> None:
    with contextlib.suppress(OSError):
        os.unlink(lock)  # while still locked, so a waiter re-checks the inode and locks afresh
    os.close(fd)
