"""JSON as oodflow prints it (``--json``) and as its report carries values: strict JSON (RFC 8259), which has no
infinities and no NaN, so a non-finite number is written ``null``. Python's own ``json`` would write
``-Infinity`` (an infinite threshold, say), which ``jq`` and most other readers refuse."""

from __future__ import annotations

import json
import math
from typing import Any


def dumps(obj: Any, **kwargs) -> str:
    """``json.dumps(obj, **kwargs)`` with every non-finite float (Python's or numpy's) as ``null``; arrays and numpy
    numbers are written as lists and numbers."""
    return json.dumps(_finite(obj), allow_nan=False, **kwargs)


def _finite(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy arrays and numbers, tensors
        obj = obj.tolist()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
