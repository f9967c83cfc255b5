"""Input complexity: the likelihood corrected by how well a lossless compressor does on the input.

A flow's likelihood is dominated by how *simple* an image is (few edges, large flat areas), which is
why a FashionMNIST flow prefers MNIST. Serrà et al. subtract that part with a generic compressor:

    S(x) = -log2 p(x) - L(x)        (bits; large S = OOD)

with ``L(x)`` the length in bits of the losslessly compressed input. oodflow stores the score with
the orientation of every other score (higher = more in-distribution)::

    complexity = -S(x) = log p(x) / ln 2 + L(x)

The paper divides both terms by the dimension; for inputs of one shape that is a constant factor and
changes no ranking, so oodflow keeps whole bits.

Compression is a Python call per image: no compressor here works on batches, and it is the only
per-sample loop of the scoring code.

References:
    Serrà, Álvarez, Gómez, Slizovskaia, Núñez & Luque, "Input Complexity and Out-of-distribution
    Detection with Likelihood-based Generative Models", ICLR 2020, arXiv:1909.11480.
"""

from __future__ import annotations

import bz2
import io
import lzma
import math
import zlib
from typing import Callable

import numpy as np
import torch

from ood_flow import names
from ood_flow.errors import InputError


def _png(image: np.ndarray) -> bytes:
    """PNG at the highest zlib level (the paper's default compressor); image is (C, H, W) uint8."""
    from PIL import Image

    c = image.shape[0]
    if c not in (1, 3):
        raise InputError(f"PNG compresses 1- or 3-channel images, got {c} channels; use --compressor zlib")
    pixels = image[0] if c == 1 else np.ascontiguousarray(image.transpose(1, 2, 0))
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=9)
    return buffer.getvalue()


COMPRESSORS: dict[str, Callable[[np.ndarray], bytes]] = {
    "png": _png,
    "zlib": lambda image: zlib.compress(image.tobytes(), 9),
    "lzma": lambda image: lzma.compress(image.tobytes(), preset=9),
    "bz2": lambda image: bz2.compress(image.tobytes(), 9),
}
names.check("compressors", COMPRESSORS, names.COMPRESSORS)
"""Lossless compressors by name: each maps one (C, H, W) uint8 image to its compressed bytes."""


def compressed_bits(x: torch.Tensor, compressor: str = "png") -> np.ndarray:
    """``L(x)``: the length in bits of each image of ``x`` (uint8, (N, C, H, W)) after compression.

    Example:
        >>> x = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
        >>> bool((compressed_bits(x, "zlib") == 8 * len(zlib.compress(bytes(64), 9))).all())
        True
    """
    if compressor not in COMPRESSORS:
        raise ValueError(f"unknown compressor {compressor!r}; valid compressors: {', '.join(COMPRESSORS)}")
    if x.dtype != torch.uint8 or x.dim() != 4:
        raise InputError("the complexity score needs 8-bit images (N, C, H, W); this source holds "
                         f"{'vectors' if x.dim() == 2 else f'{x.dtype} data of shape {tuple(x.shape)}'}")
    compress = COMPRESSORS[compressor]
    images = x.cpu().numpy()
    return np.array([8 * len(compress(image)) for image in images], dtype=np.float64)


def complexity(log_likelihood: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """``log2 p(x) + L(x)`` from the log-likelihood in nats and ``L`` in bits (= ``-S(x)`` of Serrà et al.)."""
    return np.asarray(log_likelihood, dtype=np.float64) / math.log(2.0) + np.asarray(bits, dtype=np.float64)
