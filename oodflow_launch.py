"""The ``oodflow`` command's entry point, kept apart from the ``ood_flow`` package.

Importing ``ood_flow`` takes a second or more (torch); a Ctrl-C or SIGTERM in that second used to
end in Python's traceback of the import machinery. This module imports nothing heavy, so it can
catch them: the command then ends like any interrupted command, with one line and exit 130 or 143.
"""

import signal
import sys


def _terminated(signum, frame):
    raise KeyboardInterrupt("SIGTERM")


def main() -> None:
    signal.signal(signal.SIGTERM, _terminated)
    try:
        from ood_flow.cli.main import main as run
    except KeyboardInterrupt as exc:
        terminated = str(exc) == "SIGTERM"
        sys.stderr.write("error: terminated (SIGTERM)\n" if terminated else "error: interrupted\n")
        raise SystemExit(143 if terminated else 130) from None
    run()


if __name__ == "__main__":
    main()
