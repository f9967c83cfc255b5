"""Where and how models run: the device names the commands accept, what ``auto`` means here, and the
numeric precisions."""

from __future__ import annotations

from ood_flow.errors import OodflowError

DEVICES = ("auto", "cpu", "cuda")
"""Device names: ``auto`` picks CUDA when it is available, else the CPU."""
PRECISIONS = ("fp32", "bf16")
"""Numeric precisions: ``bf16`` is autocast where the CPU (AVX512-BF16, AMX) or GPU supports it."""


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
