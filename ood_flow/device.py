"""What the machine offers: the device and precision names the commands accept, which precisions the
hardware runs and which pays, and moving tensors to a device. A run's choices among them are resolved
once, by :mod:`ood_flow.runtime`."""

from __future__ import annotations

import functools
from pathlib import Path


DEVICES = ("auto", "cpu", "cuda")
"""Device names: ``auto`` picks CUDA when it is available, else the CPU."""
PRECISIONS = ("fp32", "bf16")
"""Numeric precisions: ``bf16`` is autocast where the CPU (AVX512-BF16, AMX) or GPU supports it."""
PRECISION_CHOICES = PRECISIONS + ("auto",)
"""What ``--precision`` accepts: ``auto`` is bf16 where it pays (:func:`bf16_pays`), else fp32."""
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
"""CPU flags (``/proc/cpuinfo``) of native bfloat16 dot products; without them oneDNN emulates bf16."""


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


def narrow_split_pays(device, flags: frozenset[str] | None = None) -> bool:
    """Whether an st-network's narrow convolutions run faster as bf16 kernels than as float32 ones under bf16
    (:data:`ood_flow.flows.precision.NARROW_MODES`): on a CPU with AMX (``amx_bf16``), whose bf16 kernels
    for them are several times faster than float32 ones; without AMX (e.g. AMD Zen 4) their bf16 backward
    pass ran many times slower than float32, and on GPUs they stay as they were (docs/speed.md, "Precision").

    Example:
        >>> narrow_split_pays("cpu", flags=frozenset({"avx512_bf16"}))
        False
        >>> narrow_split_pays("cpu", flags=frozenset({"avx512_bf16", "amx_bf16"}))
        True
    """
    import torch

    if torch.device(device).type != "cpu":
        return False
    return "amx_bf16" in (cpu_flags() if flags is None else flags)


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
