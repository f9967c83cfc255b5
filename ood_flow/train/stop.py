"""Stopping training cleanly on SIGINT (Ctrl-C) or SIGTERM (schedulers, CI, ``kill``).

The first signal only asks for a stop: the loop finishes the step it is in, saves the state of
that completed step and returns, so a resumed run continues exactly where this one stopped. A
second signal stops at once (KeyboardInterrupt), except inside a critical section (the weight
update with its position, a save), where it is held until the section ends, so the state in
memory and on disk is always that of a completed step.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """A stop asked for by a signal, honoured between two training steps.

    Attributes:
        signal: name of the first signal received (``"SIGINT"``, ``"SIGTERM"``), or None.
    """

    def __init__(self) -> None:
        self.signal: str | None = None
        self._depth = 0
        self._held = False

    def request(self, name: str = "SIGINT") -> None:
        """Ask for a stop (what the first signal does); callbacks may call it too."""
        self.signal = self.signal or name

    @contextlib.contextmanager
    def catching(self) -> Iterator["StopRequest"]:
        """Route SIGINT and SIGTERM here while the block runs (only the main thread can; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in STOP_SIGNALS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.signal is None:
            self.signal = signal.Signals(signum).name
        elif self._depth:
            self._held = True
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        """A block that a second signal does not cut in half (it takes effect when the block ends)."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self._depth == 0 and self._held:
            self._held = False
            raise KeyboardInterrupt
