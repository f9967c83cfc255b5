"""What the machine offers: the device and precision names the commands accept, which precisions the
hardware runs and which pays, and moving tensors to a device. A run's choices among them are resolved
once, by :mod:`ood_flow.runtime`."""

from __future__ import annotations

import functools
import os
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
def cpu_info() -> dict[str, str]:
    """The fields of ``/proc/cpuinfo``, each as its first processor gives it (empty where there is none, e.g.
    macOS): read once."""
    path = Path("/proc/cpuinfo")
    fields: dict[str, str] = {}
    for line in (path.read_text() if path.exists() else "").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (:func:`cpu_info`'s ``flags``; empty where there are none)."""
    return frozenset(cpu_info().get("flags", "").split())


def cpu_vendor() -> str:
    """The CPU's vendor (:func:`cpu_info`'s ``vendor_id``: ``GenuineIntel``, ``AuthenticAMD``; empty where none)."""
    return cpu_info().get("vendor_id", "")


ONEDNN_ISA_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
"""Environment variables that cap the instruction sets oneDNN uses (the first set one counts, as in oneDNN)."""
_ISA_WITHOUT_AMX = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
                    "AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16"}
_ISA_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def onednn_isa_cap(environ=None) -> str | None:
    """The cap on oneDNN's instruction sets set in the environment (``ONEDNN_MAX_CPU_ISA``, else
    ``DNNL_MAX_CPU_ISA``), upper-cased, or None where neither is set.

    Example:
        >>> onednn_isa_cap({"DNNL_MAX_CPU_ISA": "avx512_core_bf16"})
        'AVX512_CORE_BF16'
        >>> onednn_isa_cap({}) is None
        True
    """
    environ = os.environ if environ is None else environ
    for name in ONEDNN_ISA_VARIABLES:
        if environ.get(name, "").strip():
            return environ[name].strip().upper()
    return None


def usable_cpu_flags(flags: frozenset[str] | None = None, cap: str | None = None) -> frozenset[str]:
    """The CPU's flags (``flags``, default :func:`cpu_flags`) less those of :data:`BF16_CPU_FLAGS` that a cap on
    oneDNN's instruction sets (``cap``, default :func:`onednn_isa_cap`) keeps it from using:
    ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`` on a CPU with AMX runs oneDNN as on one without.

    Example:
        >>> sorted(usable_cpu_flags(frozenset({"avx512_bf16", "amx_bf16"}), cap="AVX512_CORE_BF16"))
        ['avx512_bf16']
        >>> sorted(usable_cpu_flags(frozenset({"avx512_bf16", "amx_bf16"}), cap="AVX2"))
        []
    """
    flags = cpu_flags() if flags is None else flags
    cap = onednn_isa_cap() if cap is None else cap
    dropped = {"amx_bf16"} if cap in _ISA_WITHOUT_AMX else set()
    dropped |= set(BF16_CPU_FLAGS) if cap in _ISA_WITHOUT_BF16 else set()
    return frozenset(f for f in flags if f not in dropped)


def bf16_supported(device) -> bool:
    """Whether bf16 matrix products run here at all (CPU: through oneDNN, natively or emulated)."""
    import torch

    if torch.device(device).type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def bf16_pays(device, flags: frozenset[str] | None = None, capability: tuple[int, int] | None = None,
              vendor: str | None = None) -> bool:
    """Whether bf16 is faster than fp32 here: a GPU of compute capability 8.0 or later (Ampere on), or a CPU
    whose bf16 dot products oneDNN runs faster than float32 ones (:func:`usable_cpu_flags`): one with AMX, or
    an AMD one with AVX512-BF16 (Zen 4: bf16 trained and scored the paper's models 1.6-1.8x faster). On an
    Intel CPU the same AVX512-BF16 instructions without AMX ran bf16 convolutions slower than float32 ones
    (an Intel Xeon with oneDNN capped below AMX: docs/speed.md, "Precision"), so there it is fp32.
    ``flags``, ``capability`` and ``vendor`` stand in for this machine's (tests).

    Example:
        >>> bf16_pays("cpu", flags=frozenset({"avx2"}))
        False
        >>> bf16_pays("cpu", flags=frozenset({"avx512f", "avx512_bf16"}), vendor="AuthenticAMD")
        True
        >>> bf16_pays("cpu", flags=frozenset({"avx512f", "avx512_bf16"}), vendor="GenuineIntel")
        False
        >>> bf16_pays("cpu", flags=frozenset({"avx512_bf16", "amx_bf16"}), vendor="GenuineIntel")
        True
    """
    import torch

    if torch.device(device).type == "cuda":
        capability = capability or torch.cuda.get_device_capability(torch.device(device))
        return capability >= (8, 0)
    flags = usable_cpu_flags() if flags is None else flags
    vendor = cpu_vendor() if vendor is None else vendor
    return "amx_bf16" in flags or ("avx512_bf16" in flags and vendor == "AuthenticAMD")


def narrow_split_pays(device, flags: frozenset[str] | None = None, vendor: str | None = None) -> bool:
    """Whether an st-network's narrow convolutions run faster as bf16 kernels than as float32 ones under bf16
    (:data:`ood_flow.flows.precision.NARROW_MODES`): on a CPU where bf16 pays (:func:`bf16_pays`: AMX, or AMD
    with AVX512-BF16). Measured with the full preset, oodflow's bf16 Glow against float32 kernels for them:
    scoring 2.4x and training 1.5x faster with AMX (an Intel Xeon), 1.4x and 1.3x on Zen 4 (docs/speed.md,
    "What the accuracy bound costs"). Elsewhere (an Intel CPU without AMX, where bf16 itself ran slower than
    float32, and GPUs) they stay float32 kernels. AMX counts where oneDNN may use it (:func:`usable_cpu_flags`).

    Example:
        >>> narrow_split_pays("cpu", flags=frozenset({"avx512_bf16"}), vendor="AuthenticAMD")
        True
        >>> narrow_split_pays("cpu", flags=frozenset({"avx512_bf16"}), vendor="GenuineIntel")
        False
        >>> narrow_split_pays("cpu", flags=frozenset({"avx512_bf16", "amx_bf16"}), vendor="GenuineIntel")
        True
    """
    import torch

    if torch.device(device).type != "cpu":
        return False
    return bf16_pays(device, flags=flags, vendor=vendor)


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
