"""How the Python API reports when no callback is given: through :mod:`logging`, one named logger per stage
(``ood_flow.train``, ``ood_flow.score``, ``ood_flow.calibrate``, ``ood_flow.embed``). Nothing shows until the
application configures logging, e.g. ``logging.basicConfig(level=logging.INFO)``; the command line passes its
own callbacks (bars and lines on stderr) instead.
"""

from __future__ import annotations

import logging
from typing import Callable


def messages(stage: str) -> Callable[[str], None]:
    """A message callback that logs to ``ood_flow.<stage>``: lines starting ``warning:`` as warnings, the
    rest as information."""
    logger = logging.getLogger(f"ood_flow.{stage}")

    def say(text: str) -> None:
        if text.startswith("warning: "):
            logger.warning(text[len("warning: "):])
        else:
            logger.info(text)

    return say


def progress(stage: str, what: str, every: float = 0.1) -> Callable[[int, int], None]:
    """A progress callback that logs ``what: done/total`` to ``ood_flow.<stage>`` about every ``every`` of the
    way (and at the end)."""
    logger, last = logging.getLogger(f"ood_flow.{stage}"), [-1.0]

    def report(done: int, total: int) -> None:
        share = done / total if total else 1.0
        if share >= 1.0 and last[0] >= 1.0:
            return  # the end is said once
        if share >= 1.0 or share - last[0] >= every:
            last[0] = share
            logger.info("%s: %d/%d", what, done, total)

    return report
