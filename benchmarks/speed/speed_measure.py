"""Measurements for ``speed.py``: fp32 matmul and conv rates, model FLOPs, step timing, peak memory.

The machines this runs on are shared: every rate here is meant to be divided by another one taken
a moment before or after in the same process (see ``speed.py``).
"""

from __future__ import annotations

import ctypes
import gc
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode


def matmul_gflops(n: int = 2048, repeats: int = 2) -> float:
    """fp32 ``torch.mm`` rate of an ``n`` x ``n`` product, best of ``repeats`` (GFLOP/s)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def conv_gflops(batch: int = 64, channels: int = 64, size: int = 14, channels_last: bool = True,
                repeats: int = 3) -> float:
    """fp32 rate of a 3x3 ``channels`` -> ``channels`` convolution (GFLOP/s), best of ``repeats``."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch, channels, size, size).contiguous(memory_format=fmt)
    w = torch.randn(channels, channels, 3, 3).contiguous(memory_format=fmt)
    F.conv2d(x, w, padding=1)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        F.conv2d(x, w, padding=1)
        best = min(best, time.perf_counter() - t0)
    return 2 * batch * channels * channels * 9 * size * size / best / 1e9


def flops_per_image(step: Callable[[torch.Tensor], None], x: torch.Tensor) -> float:
    """Matmul/conv FLOPs that ``step(x)`` runs, per image (``FlopCounterMode``; elementwise ops not counted)."""
    counter = FlopCounterMode(display=False)
    with counter:
        step(x)
    return counter.get_total_flops() / x.shape[0]


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` took."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def fastest_us(fn: Callable[[], object], repeats: int) -> float:
    """Microseconds per call of ``fn()``, the fastest of ``repeats`` calls."""
    return min(timed(fn) for _ in range(repeats)) * 1e6


def alternate(ways: dict, rounds: int, measure: Callable[[Callable[[], object]], float]) -> dict:
    """``{name: [measure(way) per round]}`` for ``ways`` (name -> zero-argument function), in an order that flips
    every round, so that a drift of the machine weighs on every way alike."""
    per: dict = {name: [] for name in ways}
    for i in range(rounds):
        for name in list(ways) if i % 2 == 0 else list(ways)[::-1]:
            per[name].append(measure(ways[name]))
    return per


_libc = ctypes.CDLL("libc.so.6") if hasattr(ctypes, "CDLL") else None


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS so the next peak starts from a clean RSS."""
    gc.collect()
    if _libc is not None:
        _libc.malloc_trim(0)


def large_allocations_from_os() -> None:
    """Make every allocation over 128 KiB a fresh ``mmap`` (glibc), so RSS growth shows each tensor.

    Only for the memory phase: it costs page faults on every large allocation, so timings taken
    after it would be off.
    """
    if _libc is not None:
        m_mmap_threshold, m_trim_threshold = -3, -1
        _libc.mallopt(m_mmap_threshold, 128 * 1024)
        _libc.mallopt(m_trim_threshold, 128 * 1024)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory_mib(fn: Callable[[], object]) -> float | None:
    """Peak resident memory that ``fn()`` adds to the process (MiB), from Linux's VmHWM; None elsewhere."""
    try:
        release_memory()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the high-water mark to the current RSS
        base = _status_kib("VmRSS")
        fn()
        return (_status_kib("VmHWM") - base) / 1024
    except OSError:
        return None
