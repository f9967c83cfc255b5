"""The precision of the st-networks: bf16 under autocast where asked, everything else in fp32.

A coupling's st-network is most of a flow's arithmetic (its convolutions), and the one part whose
rounding only perturbs ``s`` and ``t``: the coupling itself stays exactly invertible whatever they
are. So under :func:`st_precision` ``("bf16")`` only the st-networks run under autocast and hand back
float32; the coupling arithmetic, log-determinants, logit, invertible 1x1 convolutions and prior
stay in float32, and log-densities keep float32 accumulation.

Example:
    >>> import torch
    >>> from ood_flow.flows import create_flow
    >>> flow = create_flow("realnvp", (1, 4, 4), channels=4, blocks=1, scales=1, couplings=2).eval()
    >>> with torch.no_grad(), st_precision("bf16"):
    ...     flow.log_prob(torch.rand(2, 1, 4, 4)).dtype
    torch.float32
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import torch
from torch import Tensor, nn

DTYPES = {"fp32": None, "bf16": torch.bfloat16}
_st_dtype: contextvars.ContextVar[torch.dtype | None] = contextvars.ContextVar("st_dtype", default=None)


@contextlib.contextmanager
def st_precision(precision: str) -> Iterator[None]:
    """Run the st-networks called inside this block in ``precision`` (``fp32`` or ``bf16``)."""
    if precision not in DTYPES:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(DTYPES)}")
    token = _st_dtype.set(DTYPES[precision])
    try:
        yield
    finally:
        _st_dtype.reset(token)


def current() -> str:
    """The st-network precision in force here (``fp32`` outside :func:`st_precision`)."""
    return "bf16" if _st_dtype.get() is torch.bfloat16 else "fp32"


def run_st(net: nn.Module, x: Tensor) -> Tensor:
    """``net(x)`` in the precision in force, returned as float32."""
    dtype = _st_dtype.get()
    if dtype is None:
        return net(x)
    with torch.autocast(x.device.type, dtype=dtype):
        return net(x).float()
