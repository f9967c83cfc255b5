"""Settings read from the environment, in a module light enough for the command line to check them at start
(``oodflow`` with a bad value fails at once, whatever the command)."""

from __future__ import annotations

import os

from ood_flow.errors import UsageError

WORKERS_ENV = "OODFLOW_WORKERS"


def default_workers() -> int:
    """Worker processes for reading a source: ``$OODFLOW_WORKERS`` where set, else half the usable cores (at
    most 8), and none on two cores or fewer, where a worker takes CPU from the model's threads (docs/detector.md,
    "Embedding speed", has the measurement and its command). A model much cheaper than decoding (a small flow
    scoring large photos) is the exception: a worker can pay there.

    Raises:
        UsageError: ``$OODFLOW_WORKERS`` is not a whole number >= 0.
    """
    value = os.environ.get(WORKERS_ENV, "").strip()
    if value:
        if not (value.isascii() and value.isdigit()):
            raise UsageError(f"{WORKERS_ENV}={value!r}: expected a whole number of worker processes (0 or more)")
        return int(value)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cores <= 2 else min(cores // 2, 8)
