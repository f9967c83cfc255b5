"""How a run executes, decided once: :class:`Runtime`.

Every API entry that runs a model (:func:`~ood_flow.train_flow`, :func:`~ood_flow.score_source`,
:func:`~ood_flow.embed_source`, :func:`~ood_flow.calibrate_model` through ``score_source``, the ``plot_*``
functions) turns the strings it was given (``device="auto"``, ``precision="bf16"``, ...) into one frozen
:class:`Runtime` with :func:`resolve` (or :func:`session`, which also joins the torchrun job), before any
work; the layers below receive it and never check those values again. This module is the only place where
they are checked: an unknown value is a :class:`~ood_flow.errors.UsageError`, bf16 where the device cannot
run it a :class:`~ood_flow.errors.NoBfloat16` (both exit 2).

A precision is chosen per part:

- ``st``: a flow's st-networks, under autocast where bf16 (:mod:`ood_flow.flows.precision`); the rest of a
  flow (couplings, log-determinants, logit, 1x1 convolutions, prior) always runs in fp32. The st-networks'
  narrow convolutions (:func:`~ood_flow.flows.precision.is_narrow`) keep fp32's accuracy in their kernels where
  scores are made: fp32 kernels, or, on a CPU where bf16 pays (AMX, or AMD with AVX512-BF16), split bf16 kernels
  (:attr:`Runtime.narrow`).
- ``backbone``: the CNN of ``embed`` and of a feature detector, under autocast whole. A detector's flow
  runs on the features in fp32 (:meth:`Runtime.for_detector`): ``--precision`` is its backbone's.

Example:
    >>> rt = resolve("cpu", st="fp32")
    >>> rt.device, rt.st, rt.backbone, rt.compile
    ('cpu', 'fp32', 'fp32', False)
    >>> resolve("cpu", st="fp16")
    Traceback (most recent call last):
    ...
    ood_flow.errors.UsageError: --precision: unknown precision 'fp16'; valid: fp32, bf16, auto
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Iterator

import torch

from ood_flow import distributed
from ood_flow.device import DEVICES, PRECISION_CHOICES, bf16_pays, bf16_supported, narrow_split_pays
from ood_flow.distributed import SINGLE, Dist
from ood_flow.errors import NoBfloat16, OodflowError, UsageError
from ood_flow.flows.convnets import ConvNet
from ood_flow.flows.fused import FusedPath, step_chain, vector_chain
from ood_flow.flows.nets import MLP
from ood_flow.flows.precision import DTYPES, st_autocast

MEMORY_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}
"""Memory layouts of convolutional weights and inputs: channels-last (NHWC, what oneDNN runs fastest on CPU)."""


@dataclass(frozen=True)
class Runtime:
    """How a run executes. Build it with :func:`resolve` or :func:`session`; a ``Runtime(...)`` written out
    is taken as it is (tests, benchmarks), unchecked.

    Attributes:
        device: the torch device (``cpu``, ``cuda``, or this process's GPU ``cuda:N`` under torchrun with NCCL).
        st: precision of a flow's st-networks, ``fp32`` or ``bf16``.
        backbone: precision of a backbone (``embed``, a feature detector), ``fp32`` or ``bf16``.
        memory_format: of convolutional weights and inputs, a key of :data:`MEMORY_FORMATS`.
        compile: training runs its log-density through ``torch.compile``.
        fused: scoring runs the st-networks through the fused inference path where it applies
            (:mod:`ood_flow.flows.fused`); off, the plain modules (the reference path).
        threads: intra-op threads set for this run (None: torch's default, left alone).
        dist: the processes sharing the run (:data:`~ood_flow.distributed.SINGLE` outside torchrun).
        narrow: how the st-networks' narrow convolutions compute under bf16, ``fp32`` or ``split``
            (:data:`~ood_flow.flows.precision.NARROW_MODES`); None (the default) decides from the machine:
            ``split`` where it pays (:func:`~ood_flow.device.narrow_split_pays`: a CPU with AMX, or AMD with
            AVX512-BF16), else ``fp32``.
    """

    device: str = "cpu"
    st: str = "fp32"
    backbone: str = "fp32"
    memory_format: str = "channels_last"
    compile: bool = False
    fused: bool = True
    threads: int | None = None
    dist: Dist = SINGLE
    narrow: str | None = None

    def __post_init__(self):
        if self.narrow is None:
            object.__setattr__(self, "narrow", "split" if narrow_split_pays(self.device) else "fp32")

    @property
    def layout(self) -> torch.memory_format:
        """:attr:`memory_format` as torch names it."""
        return MEMORY_FORMATS[self.memory_format]

    def for_detector(self) -> Runtime:
        """The runtime of a feature detector: its flow on features in fp32, its backbone in the precision asked
        for (``score --precision`` of a detector is its backbone's)."""
        return dataclasses.replace(self, st="fp32")

    @contextlib.contextmanager
    def st_networks(self) -> Iterator[None]:
        """Run the st-networks called inside this block in :attr:`st`. fp32 on CUDA also means cuDNN's
        convolutions without TF32 (a 10-bit mantissa), restored afterwards."""
        cuda, tf32 = torch.device(self.device).type == "cuda", torch.backends.cudnn.allow_tf32
        if cuda and self.st == "fp32":
            torch.backends.cudnn.allow_tf32 = False
        try:
            with st_autocast(DTYPES[self.st], self.narrow):
                yield
        finally:
            if cuda:
                torch.backends.cudnn.allow_tf32 = tf32

    def backbone_autocast(self) -> torch.autocast:
        """The autocast context a backbone runs in (disabled for fp32)."""
        return torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16, enabled=self.backbone == "bf16")

    def prepare(self, flow: torch.nn.Module) -> torch.nn.Module:
        """``flow`` made ready to run here, in place: on :attr:`device`, its convolutional st-networks in
        :attr:`memory_format`, and its convolutional and fully connected st-networks and its chains of couplings on
        vectors and of image flow steps (:func:`~ood_flow.flows.fused.vector_chain`,
        :func:`~ood_flow.flows.fused.step_chain`) sharing one new fused inference path
        (:class:`~ood_flow.flows.fused.FusedPath`, disabled unless :attr:`fused`; it replaces any the flow had).
        Returns ``flow``."""
        flow.to(self.device)
        path = FusedPath(enabled=self.fused, layout=self.layout)
        for net in flow.modules():
            if isinstance(net, ConvNet):
                if net.layout != self.layout:
                    net.use_layout(self.layout)
                net.fused = path
            elif isinstance(net, MLP) or vector_chain(net) or step_chain(net):
                net.fused = path
        return flow

    def continuing(self, *, precision: str | None, compile: bool | None) -> Runtime:
        """This runtime with the st precision and compilation a resumed checkpoint recorded, for those the command
        left unset (None: keep this runtime's): a run continues as it was trained; a recorded ``bf16`` is
        checked here against this device like a given one."""
        st = self.st if precision is None else resolve_precision(precision, self.device)
        return dataclasses.replace(self, st=st, compile=self.compile if compile is None else bool(compile))


def resolve(device: str = "cpu", *, st: str | None = None, backbone: str | None = None, compile: bool | None = None,
            memory_format: str = "channels_last", fused: bool = True, dist: Dist = SINGLE) -> Runtime:
    """The :class:`Runtime` for the values a user gave (None: the default, ``fp32`` and no compilation).

    Raises:
        UsageError: an unknown device, precision or memory format.
        NoBfloat16: ``bf16`` asked for where the device cannot run it (``auto`` never asks for it there).
        OodflowError: ``cuda`` where no GPU is available.
    """
    if memory_format not in MEMORY_FORMATS:
        raise UsageError(f"unknown memory format {memory_format!r}; valid: {', '.join(MEMORY_FORMATS)}")
    dev = resolve_device(device)
    return Runtime(device=dev, st=resolve_precision(st or "fp32", dev),
                   backbone=resolve_precision(backbone or "fp32", dev), memory_format=memory_format,
                   compile=bool(compile), fused=fused, dist=dist)


@contextlib.contextmanager
def session(device: str = "cpu", **values) -> Iterator[Runtime]:
    """:func:`resolve`, then the run's process group while the block runs (started from torchrun's variables
    and ended afterwards, see :func:`ood_flow.distributed.session`; one process outside torchrun): every value
    is checked before the group starts. Under NCCL the device is this process's GPU."""
    rt = resolve(device, **values)
    with distributed.session(rt.device) as dist:
        gpu = dist.device if dist.backend == "nccl" else rt.device
        yield dataclasses.replace(rt, device=gpu, dist=dist, threads=dist.threads)


def resolve_device(device: str) -> str:
    """The torch device for ``device`` (one of :data:`~ood_flow.device.DEVICES`): ``auto`` is CUDA when it is
    available, else the CPU.

    Example:
        >>> resolve_device("cpu")
        'cpu'
    """
    if device not in DEVICES:
        raise UsageError(f"--device: unknown device {device!r}; valid: {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise OodflowError("--device cuda: no CUDA device is available here; use --device cpu")
    return device


def resolve_precision(precision: str, device: str, **machine) -> str:
    """``fp32`` or ``bf16`` for ``precision`` (one of :data:`~ood_flow.device.PRECISION_CHOICES`) on ``device``:
    ``auto`` is bf16 where it pays (:func:`~ood_flow.device.bf16_pays`, given ``machine``: ``flags``,
    ``capability`` and ``vendor`` stand in for this machine's), else fp32.

    Example:
        >>> resolve_precision("auto", "cpu", flags=frozenset({"avx2"}))
        'fp32'
    """
    if precision not in PRECISION_CHOICES:
        raise UsageError(f"--precision: unknown precision {precision!r}; valid: {', '.join(PRECISION_CHOICES)}")
    if precision == "auto":
        return "bf16" if bf16_pays(device, **machine) else "fp32"
    if precision == "bf16" and not bf16_supported(device):
        raise NoBfloat16.on(torch.device(device).type)
    return precision
