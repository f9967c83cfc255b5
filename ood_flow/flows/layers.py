"""Structural and normalising bijections: squeeze, multi-scale factor-out, ActNorm, invertible 1x1 conv."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ood_flow.flows.base import Bijection
from ood_flow.flows.precision import current


def squeeze(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, 4C, H/2, W/2): each 2x2 block of a channel becomes 4 channels."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, c * 4, h // 2, w // 2)


def unsqueeze(x: Tensor) -> Tensor:
    """Exact inverse of :func:`squeeze`."""
    b, c, h, w = x.shape
    x = x.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // 4, h * 2, w * 2)


class Squeeze(Bijection):
    """Trade space for channels (a permutation: log-det 0)."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            raise ValueError(f"squeeze needs even height and width, got {tuple(x.shape[-2:])}")
        return squeeze(x), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return unsqueeze(y), y.new_zeros(y.shape[0])

    def push_mask(self, mask: Tensor) -> Tensor:
        return squeeze(mask[None])[0]


class Unsqueeze(Bijection):
    """The inverse of :class:`Squeeze` as a layer (used to return latents to image shape)."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return unsqueeze(x), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return squeeze(y), y.new_zeros(y.shape[0])

    def push_mask(self, mask: Tensor) -> Tensor:
        return unsqueeze(mask[None])[0]


class FactorOut(Bijection):
    """Multi-scale factor-out: half of the channels leaves as latent, ``inner`` transforms the other half.

    ``inner_first=True`` (RealNVP as the authors build it) transforms the first half and factors
    out the second; ``False`` (Glow, and RealNVP files of format 1) the other way round. The
    factored-out half is already a latent variable (standard normal under the model); keeping it
    in the tensor, rather than in a list on the side, keeps every layer a plain tensor-to-tensor map.
    """

    def __init__(self, inner: Bijection, inner_first: bool = False):
        super().__init__()
        self.inner, self.inner_first = inner, inner_first

    def split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(factored out, transformed further)`` halves of ``x`` (dimension 1)."""
        first, second = x.chunk(2, dim=1)
        return (second, first) if self.inner_first else (first, second)

    def join(self, out: Tensor, rest: Tensor) -> Tensor:
        """Inverse of :meth:`split`."""
        return torch.cat([rest, out] if self.inner_first else [out, rest], dim=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out, rest = self.split(x)
        rest, logdet = self.inner(rest)
        return self.join(out, rest), logdet

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        out, rest = self.split(y)
        rest, logdet = self.inner.inverse(rest)
        return self.join(out, rest), logdet

    def trace(self, x: Tensor, records: list) -> tuple[Tensor, Tensor]:
        out, rest = self.split(x)
        rest, logdet = self.inner.trace(rest, records)
        return self.join(out, rest), logdet

    def push_mask(self, mask: Tensor) -> Tensor:
        out, rest = self.split(mask[None])
        return self.join(out, self.inner.push_mask(rest[0])[None])[0]


def _pixels(x: Tensor) -> int:
    """Positions per channel of ``x`` (B, C, ...), from its shape, so that an empty batch has them too."""
    return math.prod(x.shape[2:])


class ActNorm(Bijection):
    """Per-channel affine ``y = (x + bias) * exp(log_scale)`` with data-dependent initialisation.

    On the first forward pass in training mode the parameters are set so that the batch's output
    has zero mean and unit variance per channel. The ``initialized`` flag is a buffer, so it is
    saved with the model: a loaded model never re-initialises. A batch with fewer than two values per
    channel (an empty one, or one vector) has no spread to take: it passes through and leaves the
    initialisation to the next batch (:meth:`can_initialize`). Once the flag reads true it is remembered
    on the Python side (:meth:`is_initialized`), so that a training step does not read a tensor back
    (a device synchronisation on a GPU) in every layer; loading a state dict makes it read the flag again.

    References:
        Kingma & Dhariwal, "Glow: Generative Flow with Invertible 1x1 Convolutions", NeurIPS 2018.
    """

    def __init__(self, channels: int, ndim: int = 3):
        super().__init__()
        view = (1, channels) + (1,) * (ndim - 1)
        self.bias = nn.Parameter(torch.zeros(view))
        self.log_scale = nn.Parameter(torch.zeros(view))
        self.register_buffer("initialized", torch.tensor(False))
        self._known = False  # the flag has read true (it only turns false again through a loaded state dict)

    def is_initialized(self) -> bool:
        """Whether the data-dependent initialisation has happened (the ``initialized`` buffer), reading the
        buffer only until it is true."""
        if not self._known:
            self._known = bool(self.initialized)
        return self._known

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._known = False  # the loaded flag may be false: read it again on the next training pass

    @staticmethod
    def can_initialize(values_per_channel: int) -> bool:
        """Whether a batch with this many values per channel can set the parameters (a standard deviation
        needs two)."""
        return values_per_channel >= 2

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        dims = [0] + list(range(2, x.dim()))
        self.initialize(x.mean(dim=dims, keepdim=True), x.std(dim=dims, keepdim=True))

    @torch.no_grad()
    def initialize(self, mean: Tensor, std: Tensor) -> None:
        """Set the parameters so that inputs of per-channel ``mean`` and ``std`` leave with zero mean and
        unit variance (data-parallel training passes the moments of the global batch)."""
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + 1e-6))
        self.initialized.fill_(True)
        self._known = True

    @torch.compiler.disable
    def _first_batches(self, x: Tensor) -> None:
        """Initialise from ``x`` unless the flag says it is done or ``x`` has no spread; outside any compiled graph
        (it reads the flag back), so that ``train --compile`` compiles the step without a break once it is done."""
        if not self.is_initialized() and self.can_initialize(x.shape[0] * _pixels(x)):
            self._initialize(x)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.training and not self._known:
            self._first_batches(x)
        return self.apply(x, torch.exp(self.log_scale), self.log_scale.sum())

    def apply(self, x: Tensor, scale: Tensor, log_scale_sum: Tensor, *, inplace: bool = False) -> tuple[Tensor, Tensor]:
        """:meth:`forward` given ``exp(log_scale)`` and ``log_scale.sum()`` (which a fused inference path keeps
        between batches, :meth:`ood_flow.flows.fused.FusedPath.run_steps`); ``inplace`` (no gradients) scales
        the shifted copy of ``x`` where it lies: the same products."""
        y = (x + self.bias).mul_(scale) if inplace else (x + self.bias) * scale
        return y, (log_scale_sum * _pixels(x)).expand(x.shape[0])

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x = y * torch.exp(-self.log_scale) - self.bias
        return x, (-self.log_scale.sum() * _pixels(y)).expand(y.shape[0])


def mix_channels(x: Tensor, w: Tensor) -> Tensor:
    """``y[:, i] = sum_j w[i, j] * x[:, j]`` at every position of ``x`` (B, C, H, W): a 1x1 convolution as a
    matrix product, in ``x``'s memory format."""
    if x.is_contiguous():
        b, c = x.shape[:2]
        return torch.matmul(w, x.reshape(b, c, _pixels(x))).view(x.shape)
    return torch.matmul(x.movedim(1, -1), w.T).movedim(-1, 1)


class InvConv1x1(Bijection):
    """Invertible 1x1 convolution with an LU-parametrised weight ``W = P L (U + diag(sign * exp(log_s)))``.

    One ``C x C`` parameter ``lu`` holds all free numbers: ``L``'s strict lower triangle (unit
    diagonal implied), ``U``'s strict upper triangle and ``log_s`` on the diagonal, so the layer has
    ``C^2`` parameters, as many as a plain ``C x C`` weight (the authors' Glow). The log-det is
    ``H * W * sum(log_s)``: no determinant is computed at run time.

    References:
        Kingma & Dhariwal, "Glow", NeurIPS 2018, Section 3.2.
    """

    def __init__(self, channels: int):
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(channels, channels))
        p, lower, upper = torch.linalg.lu(q)
        diag = torch.diagonal(upper)
        self.register_buffer("perm", p)
        self.register_buffer("sign_s", torch.sign(diag))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1), persistent=False)
        self.register_buffer("eye", torch.eye(channels), persistent=False)
        self.lu = nn.Parameter(torch.tril(lower, -1) + torch.triu(upper, 1) + torch.diag(torch.log(diag.abs())))

    def log_s(self) -> Tensor:
        return torch.diagonal(self.lu)

    def weight(self) -> Tensor:
        lower = self.lu * self.lower_mask + self.eye
        upper = self.lu * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s()))
        return self.perm @ lower @ upper

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.apply(x, self.weight())

    def apply(self, x: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`forward` given the weight (:meth:`weight`, which a fused inference path keeps between batches,
        :meth:`ood_flow.flows.fused.FusedPath.run_steps`)."""
        # under a bf16 runtime as a matrix product: the same float32 arithmetic, but torch's convolution for so
        # few channels is many times slower (docs/speed.md); float32 runs keep the convolution's bits
        y = mix_channels(x, w) if current() == "bf16" else F.conv2d(x, w.view(*w.shape, 1, 1))
        return y, (self.log_s().sum() * _pixels(x)).expand(x.shape[0])

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        w_inv = torch.linalg.inv(self.weight())
        x = F.conv2d(y, w_inv.view(*w_inv.shape, 1, 1))
        return x, (-self.log_s().sum() * _pixels(y)).expand(y.shape[0])

    def push_mask(self, mask: Tensor) -> Tensor:
        return mask.any(dim=0, keepdim=True).expand_as(mask)  # channels mix at each position
