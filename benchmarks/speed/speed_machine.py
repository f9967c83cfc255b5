"""The machine ``speed.py`` ran on, and a peak rate that does not move with load.

The peak is the best of many large matmuls and 3x3 convolutions per precision, so one quiet moment
during the timing is enough to find it; a model's utilization is its GFLOP/s over this peak and can
never honestly exceed 1 (``speed_report`` says so when it would).
"""

from __future__ import annotations

import os
import platform
import sys
import time

import torch
import torch.nn.functional as F

from portable import command_line

from ood_flow.device import bf16_pays, cpu_flags, cpu_info, onednn_isa_cap

FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def cpu_model() -> str:
    return cpu_info().get("model name") or platform.processor() or platform.machine()


MALLOC_CHOICES = ("kept", "system")


def set_allocator(choice: str) -> str:
    """The process's allocator as ``--malloc`` says, for every library in it alike: ``kept`` keeps freed memory
    for reuse as the ``oodflow`` command does (:func:`ood_flow.allocator.keep_freed_memory`: no fresh mmap and
    page faults per large block), ``system`` leaves glibc's defaults. Returns what is in force."""
    from ood_flow.allocator import keep_freed_memory

    return "kept" if choice == "kept" and keep_freed_memory() else "system"


def with_cap(command: str) -> str:
    """``command`` as it ran: with the cap on oneDNN's instruction sets in front where one was set (a run
    without AMX on an AMX CPU, ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16``)."""
    cap = onednn_isa_cap()
    return f"ONEDNN_MAX_CPU_ISA={cap} {command}" if cap else command


def shown_command(script: str, argv: list[str] | None, **places: str | None) -> str:
    """The command a result records: ``python SCRIPT ARGS`` (``argv`` None: this process's own), its paths made
    portable (``portable.command_line``), with a oneDNN cap in front where one was set (:func:`with_cap`)."""
    return with_cap(command_line(script, sys.argv[1:] if argv is None else argv, **places))


def cap_note(env: dict) -> str:
    """``", oneDNN capped at ISA"`` for a machine line where the run capped oneDNN, else nothing."""
    return f", oneDNN capped at {env['onednn_max_cpu_isa']}" if env.get("onednn_max_cpu_isa") else ""


def machine(data: str, malloc: str = "system", peers: tuple[str, ...] = ("normflows",)) -> dict:
    """CPU model, the flags that matter for fp32/bf16 speed, a cap on oneDNN's instruction sets where one is
    set, threads, load, versions (torch's and each peer package's), data, the allocator."""
    from importlib.metadata import version

    return {"cpu": cpu_model(), "malloc": malloc, "cpu_flags": [f for f in FLAGS if f in cpu_flags()],
            "onednn_max_cpu_isa": onednn_isa_cap(), "bf16_native": bf16_pays("cpu"),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "load_average_start": os.getloadavg(), "torch": torch.__version__,
            **{peer: version(peer) for peer in peers}, "python": platform.python_version(), "data": data}


def _best(fn, flops: float, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return flops / best / 1e9


def peak_rates(n: int = 2048, repeats: int = 12) -> dict[str, float]:
    """Per precision, the best GFLOP/s of an ``n`` x ``n`` matmul and of a 64-channel 3x3 convolution
    (channels-last, 28x28, batch 64) over ``repeats`` runs each."""
    out = {}
    for name, dtype in DTYPES.items():
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        x = torch.randn(64, 64, 28, 28, dtype=dtype).contiguous(memory_format=torch.channels_last)
        w = torch.randn(64, 64, 3, 3, dtype=dtype).contiguous(memory_format=torch.channels_last)
        mm = _best(lambda: torch.mm(a, b), 2 * n**3, repeats)
        conv = _best(lambda: F.conv2d(x, w, padding=1), 2 * 64 * 64 * 9 * 28 * 28 * 64, repeats)
        out[name] = max(mm, conv)
    return out
