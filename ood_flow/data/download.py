"""Finding dataset files under the data root, and downloading them where a network exists.

Offline first: a missing dataset is an error that says exactly which files to put
where. A download is tried only when the root is writable, and with a short socket
timeout so that an offline machine fails in seconds rather than minutes.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Callable

from ood_flow.errors import InputError

DOWNLOAD_TIMEOUT_S = 5.0
_HINT = "(or set --data-dir / OODFLOW_DATA_DIR)"


def default_data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The folder that holds named datasets in torchvision's layout.

    ``data_dir`` if given, else ``$OODFLOW_DATA_DIR``, else ``~/.cache/oodflow``.
    """
    chosen = data_dir or os.environ.get("OODFLOW_DATA_DIR") or Path.home() / ".cache" / "oodflow"
    return Path(chosen).expanduser()


def missing_error(name: str, root: Path, folder: Path, files: list[str], extra: str = "") -> InputError:
    """The error for a dataset whose files are absent: which files to put in which folder."""
    return InputError(f"{name}: not found under {root}; put {', '.join(files)} in {folder}/{extra} {_HINT}")


def ensure(present: Callable[[], bool], error: InputError, *, root: Path, download: bool,
           downloader: Callable[[], object] | None) -> None:
    """Return if ``present()``; else download with ``downloader`` (when allowed) or raise ``error``.

    Args:
        present: tells whether the files are in place.
        error: the :func:`missing_error` to raise when they are not and cannot be fetched.
        root: the data root the downloader writes into.
        download: whether a download may be tried at all.
        downloader: fetches the files into ``root`` (torchvision's downloader), or None
            where no download exists.

    Raises:
        InputError: ``error``, with the reason no download happened or why it failed.
    """
    if present():
        return
    if not download or downloader is None:
        raise error
    if not _writable(root):
        raise InputError(f"{error}; {root} is not writable, so no download was tried")
    _fetch(downloader, error)
    if not present():
        raise InputError(f"{error}; the download finished but the files are still missing")


def _writable(root: Path) -> bool:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(root, os.W_OK)


def _fetch(downloader: Callable[[], object], error: InputError) -> None:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        downloader()
    except Exception as exc:  # torchvision raises many kinds (URLError, RuntimeError, ...)
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise InputError(f"{error}; download failed: {reason}") from None
    finally:
        socket.setdefaulttimeout(previous)
