"""The one writer for every file oodflow writes: checked, locked, atomic.

Every output goes through :func:`atomic_write`:

* the target is checked first (:func:`check_output`): an existing file is replaced only with
  ``overwrite``, and never when it is of another kind (a score file is not replaced by a picture),
  nor when it is a folder, a device or any other non-regular file;
* an exclusive lock file beside the target (``.NAME.lock``, see :func:`file_lock`) is held while the
  temporary file exists, so two processes writing one file take turns and a read-modify-replace
  (adding a group to a score file) never loses the other writer's work;
* the content goes to a temporary file beside the target, ``.NAME.oodflow-PID-XXXXXXXX.tmp``
  (shortened with a hash when the name would exceed the file system's limit), which is flushed and
  renamed into place; on any error or interrupt it is removed and the target is left as it was;
* temporaries of this naming left by a writer that is gone (killed) are removed, under the lock,
  and each removal is logged on the ``ood_flow`` logger;
* errors name the user's file, never the temporary one.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from ood_flow import filelock
from ood_flow.errors import AlreadyExists, OutputError

log = logging.getLogger("ood_flow")

_PID_DIGITS = 10  # room reserved for the process id, so a name's temporary stem never depends on the pid
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Kind:
    """What an existing file must be for a writer to replace it (with ``overwrite``).

    Attributes:
        what: how messages call it, e.g. ``"an oodflow model file"``.
        test: true when the file at the given path is of this kind.
    """

    what: str
    test: Callable[[Path], bool]


def _starts_with(magic: bytes) -> Callable[[Path], bool]:
    def test(path: Path) -> bool:
        try:
            with open(path, "rb") as f:
                return f.read(len(magic)) == magic
        except OSError:
            return False

    return test


PNG = Kind("a PNG image", _starts_with(_PNG_MAGIC))


# ---------------------------------------------------------------- names


def name_max(folder: Path) -> int:
    """The longest file name (bytes) the file system of ``folder`` allows (255 where it cannot tell)."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def shorten(name: str, limit: int) -> str:
    """``name`` if it fits in ``limit`` bytes, else its head and a hash of all of it (``head~0123abcd4567``)."""
    if len(os.fsencode(name)) <= limit:
        return name
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:12]
    head = os.fsencode(name)[: limit - len(digest) - 1].decode("utf-8", errors="ignore")
    return f"{head}~{digest}"


def _stem(path: Path) -> str:
    """The part of the temporary and lock names that stands for ``path.name``; it fits the name limit."""
    room = name_max(path.parent) - len(".") - len(f".oodflow-{'9' * _PID_DIGITS}-xxxxxxxx.tmp")
    return shorten(path.name, room)


def temp_path(path: str | os.PathLike) -> Path:
    """A fresh temporary name beside ``path`` that names this process: ``.NAME.oodflow-PID-XXXXXXXX.tmp``."""
    path = Path(path)
    return path.with_name(f".{_stem(path)}.oodflow-{os.getpid()}-{secrets.token_hex(4)}.tmp")


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of ``path``: ``.NAME.lock`` beside it."""
    path = Path(path)
    return path.with_name(f".{_stem(path)}.lock")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def clean_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of ``path`` whose writing process is gone; returns what was removed.

    Call it under :func:`file_lock` (every writer holds the lock while its temporary exists, so a
    live writer's file is never touched). Only names of this module's pattern are considered.
    """
    path = Path(path)
    folder, stem = path.parent, _stem(path)
    pattern = re.compile(rf"\.{re.escape(stem)}\.oodflow-(\d+)-[0-9a-f]{{8}}\.tmp")
    removed = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid == os.getpid() or _pid_alive(pid):
            continue
        with contextlib.suppress(FileNotFoundError):
            size = (folder / entry).stat().st_size
            (folder / entry).unlink()
            removed.append(folder / entry)
            log.warning("removed %s (%s left by process %d, which is gone)", folder / entry, _size(size), pid)
    return removed


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n} bytes"


# ---------------------------------------------------------------- checks


def check_output(path: str | os.PathLike, *, overwrite: bool = False, kind: Kind | None = None,
                 replaceable: bool = False) -> Path:
    """Fail before any work if ``path`` could not be written; returns it as a Path.

    Args:
        path: the file to be written.
        overwrite: an existing file may be replaced (only when it is of ``kind``).
        kind: what an existing file must be to be replaced.
        replaceable: an existing file of ``kind`` is updated in place without ``overwrite`` (a score
            file that gets a new group, a model that training continues).

    Raises:
        OutputError: the path is a folder or other non-regular file, exists (without ``overwrite``),
            is of another kind, lies in a missing or unwritable folder, or has a name that is too long.
    """
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(f"{path}: no such folder {folder}")
    if len(os.fsencode(path.name)) > name_max(folder):
        raise OutputError(f"{path}: file name too long ({len(os.fsencode(path.name))} bytes; this file system "
                          f"allows {name_max(folder)})")
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name")
    if os.path.lexists(path):
        _check_existing(path, overwrite, kind, replaceable)
    _probe(path)
    return path


def _check_existing(path: Path, overwrite: bool, kind: Kind | None, replaceable: bool) -> None:
    if not os.path.exists(path):
        return  # a dangling symbolic link: the write creates its target
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OutputError(f"{path} exists and is not a regular file; refusing to replace it")
    same = kind is not None and kind.test(path)
    if kind is not None and not same:
        raise OutputError(f"{path} exists and is not {kind.what}; refusing to replace it (even with --overwrite)")
    if not overwrite and not (replaceable and same):
        raise AlreadyExists(str(path))


def _probe(path: Path) -> None:
    """Create and remove a temporary beside ``path``: the folder is writable (also for root, and on
    read-only file systems, where ``os.access`` says yes)."""
    probe = temp_path(path)
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write in {path.parent}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)


# ---------------------------------------------------------------- the lock


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, timeout: float | None = 600.0) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (the lock file ``.NAME.lock`` beside it).

    The kernel releases the lock when its process ends, however it ends, so a killed writer never
    leaves a lock that blocks the next one. Re-entrant within a thread; other threads and processes
    wait, at most ``timeout`` seconds (None: no limit; 0: fail at once if it is held).

    Raises:
        OutputError: the lock is held elsewhere past ``timeout``, or the folder is not writable.
    """
    with filelock.hold(lock_path(os.path.realpath(path)), Path(path), timeout=timeout):
        yield


# ---------------------------------------------------------------- writing


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, overwrite: bool = False, kind: Kind | None = None,
                 replaceable: bool = False, timeout: float | None = 600.0) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    Checks the target (:func:`check_output`), locks it (:func:`file_lock`) and removes stale
    temporaries first. On any exception, KeyboardInterrupt included, the temporary is removed and
    ``path`` is left exactly as it was. Failures to write (a full disk, a read-only folder) raise
    :class:`OutputError` naming ``path``. A symbolic link is followed: its target is replaced.

    Example:
        >>> with atomic_write("model.pt", overwrite=True) as tmp:  # doctest: +SKIP
        ...     torch.save(state, tmp)
    """
    shown = Path(path)
    target = Path(os.path.realpath(path))
    with file_lock(target, timeout=timeout):
        clean_stale_temporaries(target)
        check_output(shown, overwrite=overwrite, kind=kind, replaceable=replaceable)
        tmp = temp_path(target)
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, _mode_for(target)))
            yield tmp
            _commit(tmp, target)
        except AlreadyExists:  # an OSError too (FileExistsError), but the caller's refusal, not a failed write
            raise
        except (OSError, RuntimeError) as exc:
            raise OutputError(f"{shown}: cannot write: {_describe(exc, tmp, shown)}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _commit(tmp: Path, target: Path) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.chmod(tmp, _mode_for(target))
    os.replace(tmp, target)
    with contextlib.suppress(OSError):
        fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _describe(exc: BaseException, tmp: Path, shown: Path) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text.replace(os.fspath(tmp), os.fspath(shown)).replace(tmp.name, shown.name)[:300]


def _mode_for(path: Path) -> int:
    """Keep an existing file's permissions; a new file gets the usual ``0o666 & ~umask``."""
    if path.exists():
        return path.stat().st_mode & 0o7777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (for provenance attributes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
