"""Range checks of numeric settings: a value out of range or not finite is a usage error (exit 2).

The core calls these on its configuration and arguments, so a script gets the same one-line
message as the command line; options are named as on the command line (``--lr``).

Example:
    >>> check_number("--lr", 1e-3, low=0, low_open=True)
    >>> check_number("--lr", float("nan"), low=0, low_open=True)
    Traceback (most recent call last):
    ...
    ood_flow.errors.UsageError: --lr must be a finite number > 0, got nan
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from ood_flow.errors import UsageError

SEED_RANGE = (0, 2**32)  # numpy's range: any seed a user is likely to type, and safe in torch's arithmetic


def check_number(option: str, value, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, integer: bool = False) -> None:
    """Raise :class:`UsageError` unless ``value`` is a finite number within the given bounds.

    Args:
        option: the name shown in the message, e.g. ``"--lr"``.
        low, high: bounds (None: unbounded on that side).
        low_open, high_open: the bound itself is excluded.
        integer: ``value`` must be an integer.
    """
    if value is None:
        return
    ok = isinstance(value, Integral if integer else Real) and not isinstance(value, bool)
    ok = ok and math.isfinite(value)
    ok = ok and (low is None or (value > low if low_open else value >= low))
    ok = ok and (high is None or (value < high if high_open else value <= high))
    if not ok:
        raise UsageError(f"{option} must be {describe(low, high, low_open, high_open, integer)}, got {value}")


def describe(low, high, low_open: bool = False, high_open: bool = False, integer: bool = False) -> str:
    """The allowed range in words: ``"a finite number > 0"``, ``"a number in [0, 1)"``, ``"an integer >= 1"``."""
    what = "an integer" if integer else "a number"
    if low is not None and high is not None:
        return f"{what} in {'(' if low_open else '['}{_fmt(low)}, {_fmt(high)}{')' if high_open else ']'}"
    if low is not None:
        return f"{'an integer' if integer else 'a finite number'} {'>' if low_open else '>='} {_fmt(low)}"
    if high is not None:
        return f"{'an integer' if integer else 'a finite number'} {'<' if high_open else '<='} {_fmt(high)}"
    return "an integer" if integer else "a finite number"


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def check_seed(option: str, value) -> None:
    check_number(option, value, low=SEED_RANGE[0], high=SEED_RANGE[1], high_open=True, integer=True)


def parse_reference(text: str) -> tuple[str, str]:
    """``FILE:GROUP`` split at the last ``:``: a file name may contain ``:``, a group name may not."""
    path, sep, group = str(text).rpartition(":")
    if not sep or not path or not group:
        raise ValueError(f"reference {text!r} must be FILE:GROUP, e.g. ref.h5:fashionmnist-val")
    return path, group
