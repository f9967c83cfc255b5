"""Stopping training cleanly on SIGINT (Ctrl-C) or SIGTERM (schedulers, CI, ``kill``).

The first signal only asks for a stop: the loop finishes the step it is in, saves the state of
that completed step and returns, so a resumed run continues exactly where this one stopped. A
second signal stops at once (KeyboardInterrupt), except inside a critical section (the weight
update with its position, a save), where it is held until the section ends, so the state in
memory and on disk is always that of a completed step. The first signal is answered at once (through
``on_request``, e.g. with :func:`stop_message`), since the step it waits for may take a while.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """A stop asked for by a signal, honoured between two training steps.

    Attributes:
        signal: name of the first signal received (``"SIGINT"``, ``"SIGTERM"``), or None.
        on_request: called with that name as soon as the first signal arrives (inside the signal handler).
    """

    def __init__(self, on_request: Callable[[str], None] | None = None) -> None:
        self.signal: str | None = None
        self.on_request = on_request
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
            if self.on_request is not None:
                with contextlib.suppress(Exception):  # a message that cannot be shown (closed stderr) must not
                    self.on_request(self.signal)     # raise in the middle of a step
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


def stop_message(name: str, step_seconds: float | None, measured: bool = False) -> str:
    """What the first signal ``name`` does, in one line: stop after the current step (taking up to about
    ``step_seconds``, when known), save it; a second signal stops at once."""
    key = "Ctrl-C" if name == "SIGINT" else name
    wait = ""
    if step_seconds is not None:
        wait = f" (within about {_about(step_seconds)}, from the {'measured' if measured else 'probed'} step time)"
    return (f"{key}: stopping after the current step{wait}, then saving it to resume from; {key} again stops at "
            "once, keeping the last completed step")


def _about(seconds: float) -> str:
    """``0.2 s``, ``35 s``, ``4 min``, ``1.5 h``."""
    if seconds < 1:
        return f"{seconds:.1g} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"
