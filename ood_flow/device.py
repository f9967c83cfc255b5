"""Where and how models run: the device names the commands accept, what ``auto`` means here, and the
numeric precisions (which of them the hardware runs natively, and which pays)."""

from __future__ import annotations

import functools
from pathlib import Path

from ood_flow.errors import OodflowError, UsageError

DEVICES = ("auto", "cpu", "cuda")
"""Device names: ``auto`` picks CUDA when it is available, else the CPU."""
PRECISIONS = ("fp32", "bf16")
"""Numeric precisions: ``bf16`` is autocast where the CPU (AVX512-BF16, AMX) or GPU supports it."""
PRECISION_CHOICES = PRECISIONS + ("auto",)
"""What ``train`` and ``score`` accept: ``auto`` is bf16 where it pays (:func:`bf16_pays`), else fp32."""
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
"""CPU flags (``/proc/cpuinfo``) of native bfloat16 dot products; without them oneDNN emulates bf16."""


def resolve_device(device: str) -> str:
    """The torch device for ``device`` (one of :data:`DEVICES`).

    Example:
        >>> resolve_device("cpu")
        'cpu'
    """
    import torch

    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; valid devices: {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise OodflowError("--device cuda: no CUDA device is available here; use --device cpu")
    return device


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none, e.g. macOS)."""
    path = Path("/proc/cpuinfo")
    text = path.read_text() if path.exists() else ""
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def bf16_supported(device) -> bool:
    """Whether bf16 matrix products run here at all (CPU: through oneDNN, natively or emulated)."""
    import torch

    if torch.device(device).type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def bf16_pays(device, flags: frozenset[str] | None = None, capability: tuple[int, int] | None = None) -> bool:
    """Whether bf16 is faster than fp32 here: a GPU of compute capability 8.0 or later (Ampere on), or
    a CPU with native bf16 dot products (:data:`BF16_CPU_FLAGS`). ``flags`` and ``capability`` stand
    in for this machine's (tests).

    Example:
        >>> bf16_pays("cpu", flags=frozenset({"avx2"}))
        False
        >>> bf16_pays("cpu", flags=frozenset({"avx512f", "avx512_bf16"}))
        True
    """
    import torch

    if torch.device(device).type == "cuda":
        capability = capability or torch.cuda.get_device_capability(torch.device(device))
        return capability >= (8, 0)
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_CPU_FLAGS)


def resolve_precision(precision: str, device, **machine) -> str:
    """``fp32`` or ``bf16`` for ``precision`` (one of :data:`PRECISION_CHOICES`) on ``device``.

    ``auto`` is bf16 where it pays (:func:`bf16_pays`, given ``machine``), else fp32. An explicit
    ``bf16`` where the device cannot run it at all is a usage error.

    Example:
        >>> resolve_precision("auto", "cpu", flags=frozenset({"avx2"}))
        'fp32'
    """
    if precision not in PRECISION_CHOICES:
        raise UsageError(f"--precision: unknown precision {precision!r}; valid: {', '.join(PRECISION_CHOICES)}")
    if precision == "auto":
        return "bf16" if bf16_pays(device, **machine) else "fp32"
    if precision == "bf16" and not bf16_supported(device):
        raise UsageError(f"--precision bf16: {device} has no bfloat16 support here; use --precision fp32")
    return precision


def to_device(x, device):
    """``x`` on ``device``; to CUDA from pinned memory without blocking (the copy overlaps the work
    queued before it), elsewhere a plain ``.to``.

    Example:
        >>> import torch
        >>> to_device(torch.zeros(2), torch.device("cpu")).device.type
        'cpu'
    """
    import torch

    device = torch.device(device)
    if device.type != "cuda" or x.device.type == "cuda":
        return x.to(device)
    return x.pin_memory().to(device, non_blocking=True)
