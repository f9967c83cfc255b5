"""The precision of the st-networks: bf16 under autocast where the runtime says so, everything else in fp32.

A coupling's st-network is most of a flow's arithmetic (its convolutions), and the one part whose
rounding only perturbs ``s`` and ``t``: the coupling itself stays exactly invertible whatever they
are. So under :func:`st_autocast` ``(torch.bfloat16)`` (entered by :meth:`ood_flow.runtime.Runtime.st_networks`,
the only place that chooses the precision) only the st-networks run under autocast and hand back float32;
the coupling arithmetic, log-determinants, logit, invertible 1x1 convolutions and prior stay in float32,
and log-densities keep float32 accumulation.

Narrow convolutions, with fewer than :data:`NARROW` input or output channels (an st-network's first and
last, which see the few image channels and predict ``s`` and ``t``), keep float32's accuracy under bf16
where scores are made: run plainly in bf16 they moved a trained model's scores past the bf16 bound (the last
one's rounded weights and outputs; docs/speed.md, "Precision"). A narrow
convolution that widens (few input channels, many output: an st-network's first) hands its output on in the
autocast dtype (:func:`is_widening`), so that the wide layers after it, their batch norms and residual sums
run in bf16 without a cast per layer; that rounding is the one the next convolution made anyway.

How the narrow convolutions compute under bf16 is the runtime's choice (:data:`NARROW_MODES`, decided once in
:class:`~ood_flow.runtime.Runtime` from what the machine has, :func:`~ood_flow.device.narrow_split_pays`):
``fp32``, float32 kernels, where bf16 does not pay; or ``split``, on a CPU where it does (AMX, or AMD with
AVX512-BF16): where gradients flow (training, whose bound is on validation bits/dim) they run in bf16 as
autocast would, and where scores are made the fused path (:mod:`ood_flow.flows.fused`) runs them as bf16
kernels whose float32 kernel is split into a bf16 part and a bf16 remainder, with float32 accumulation, which
keeps the kernel float32's to about 16 bits (inputs and outputs are rounded to bf16, as every bf16 layer's are:
the widening one's input, the last one's output).
Which convolutions are narrow or widening is decided once, when a network is built: :class:`STConv2d` and
the weight-normalised :class:`~ood_flow.flows.weightnorm.WNConv2d` record it as ``narrow`` and ``widens``, and
they and the fused path (:mod:`ood_flow.flows.fused`) read it there; nothing about a network changes when
it first runs in bf16.

Example:
    >>> import torch
    >>> from ood_flow.flows import create_flow
    >>> flow = create_flow("realnvp", (1, 4, 4), channels=4, blocks=1, scales=1, couplings=2).eval()
    >>> with torch.no_grad(), st_autocast(torch.bfloat16):
    ...     flow.log_prob(torch.rand(2, 1, 4, 4)).dtype
    torch.float32
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

DTYPES = {"fp32": None, "bf16": torch.bfloat16}
"""The autocast dtype of each precision (None: no autocast)."""
NARROW = 16
NARROW_MODES = ("fp32", "split", "bf16")
"""How narrow convolutions compute under bf16 (see the module docstring). ``bf16``, plainly in bf16 everywhere
as a peer that runs its whole model under autocast does, is never the runtime's choice: it broke the bf16
bound on trained models; it is there to measure what keeping the bound costs (``benchmarks/speed``)."""
_st_dtype: contextvars.ContextVar[torch.dtype | None] = contextvars.ContextVar("st_dtype", default=None)
_narrow: contextvars.ContextVar[str] = contextvars.ContextVar("narrow", default="fp32")


@contextlib.contextmanager
def st_autocast(dtype: torch.dtype | None, narrow: str = "fp32") -> Iterator[None]:
    """Run the st-networks called inside this block under autocast to ``dtype`` (None: in float32), their
    narrow convolutions as ``narrow`` says (one of :data:`NARROW_MODES`)."""
    tokens = _st_dtype.set(dtype), _narrow.set(narrow)
    try:
        yield
    finally:
        _st_dtype.reset(tokens[0])
        _narrow.reset(tokens[1])


def narrow_mode() -> str:
    """How narrow convolutions compute in this block (:data:`NARROW_MODES`; ``fp32`` outside :func:`st_autocast`)."""
    return _narrow.get()


def current() -> str:
    """The st-network precision in force here (``fp32`` outside :func:`st_autocast`)."""
    return "bf16" if _st_dtype.get() is torch.bfloat16 else "fp32"


def run_st(net: nn.Module, x: Tensor) -> Tensor:
    """``net(x)`` in the precision in force, returned as float32."""
    dtype = _st_dtype.get()
    if dtype is None:
        return net(x)
    with torch.autocast(x.device.type, dtype=dtype):
        return net(x).float()


def is_narrow(cin: int, cout: int) -> bool:
    """Whether a convolution of ``cin`` to ``cout`` channels stays in float32 under autocast (see the module
    docstring): the rule, in one place.

    Example:
        >>> is_narrow(2, 64), is_narrow(64, 64)
        (True, False)
    """
    return min(cin, cout) < NARROW


def is_widening(cin: int, cout: int) -> bool:
    """Whether a narrow convolution of ``cin`` to ``cout`` channels feeds wide layers, so that under autocast
    its float32 output goes on in the autocast dtype (see the module docstring).

    Example:
        >>> is_widening(2, 64), is_widening(64, 4), is_widening(64, 64)
        (True, False, False)
    """
    return cin < NARROW <= cout


def narrow_forward(forward: Callable[[Tensor], Tensor], x: Tensor, widens: bool) -> Tensor:
    """``forward(x)`` of a narrow convolution: in float32 with autocast off where autocast is on, the output
    handed on in the autocast dtype if it ``widens`` (:func:`is_widening`); under autocast with gradients on
    in the ``split`` mode (:func:`narrow_mode`), as autocast runs it."""
    device, mode = x.device.type, _narrow.get()
    if not torch.is_autocast_enabled(device) or mode == "bf16" or (mode == "split" and torch.is_grad_enabled()):
        return forward(x)
    with torch.autocast(device, enabled=False):
        y = forward(x.float())
    return y.to(torch.get_autocast_dtype(device)) if widens else y


class STConv2d(nn.Conv2d):
    """A plain convolution of an st-network, narrow or not as :func:`is_narrow` decides when it is built
    (``narrow``); a narrow one runs in float32 even under autocast (and hands its output on in the autocast
    dtype if it ``widens``). Its weights and state dict are ``nn.Conv2d``'s."""

    def __init__(self, cin: int, cout: int, kernel: int, **options):
        super().__init__(cin, cout, kernel, **options)
        self.narrow, self.widens = is_narrow(cin, cout), is_widening(cin, cout)

    def forward(self, x: Tensor) -> Tensor:
        return narrow_forward(super().forward, x, self.widens) if self.narrow else super().forward(x)
