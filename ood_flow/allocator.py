"""Keep freed memory in the process for the next batch, instead of returning it to the kernel (glibc).

A CNN or flow forward allocates activations of tens to hundreds of MB per layer and frees them at
once. glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh ``mmap``
and unmaps it on ``free``, so each batch touches its activations' pages anew: the kernel zeroes
and maps every 4 KiB page again. For a large backbone that page-fault work can take as much CPU
time as the arithmetic. With mmap off and the heap trimmed only above 2 GiB of free memory at its top,
the freed pages are reused: ``benchmarks/speed/malloc_effect.py`` measures the difference side by side
(docs/speed.md, "Memory allocator", has its numbers and command).

The cost: up to 2 GiB of freed memory stays mapped in the process until it exits, and the peak
resident memory can be a little higher (freed blocks are reused, not always fitted exactly; the
benchmark reports it). ``OODFLOW_MALLOC=system`` keeps glibc's defaults.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

M_TRIM_THRESHOLD = -1
"""glibc's mallopt parameter: free memory at the top of the heap above this is returned to the kernel."""
M_MMAP_MAX = -4
"""glibc's mallopt parameter: the most allocations served by their own mmap (0: none; the heap serves all)."""
TRIM_THRESHOLD = 2**31 - 1
"""The largest value mallopt takes (an int): about 2 GiB of freed memory kept for reuse."""


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to reuse freed memory (see the module docstring); True when it took effect.

    Does nothing (False) off Linux, with another C library, or when ``OODFLOW_MALLOC=system``. It
    changes the whole process, so the ``oodflow`` command calls it once at start; a program using the
    Python API may call it too. Worker processes forked afterwards inherit it.
    """
    if os.environ.get("OODFLOW_MALLOC", "").strip().lower() == "system":
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        return libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    except (OSError, AttributeError):
        return False
