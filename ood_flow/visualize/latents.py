"""What the latent-space figures show, computed from a flow (paper, Fig. 2, 10, 16, 17; Appendix E, J.1).

Image latents already have the input's shape: every scale of a flow built by
:func:`ood_flow.create_flow` un-squeezes its output and keeps factored-out halves in place,
so ``z`` is the "un-squeezed" latent image of Appendix E (see :mod:`ood_flow.flows.models`).

Dequantization noise is the scorer's (:func:`~ood_flow.dequantize.dequantized_draws`: a fixed
function of seed and sample id), so a latent figure and ``oodflow score`` see the same inputs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor

from ood_flow.dequantize import bits_per_dim, dequantized_draws, discrete_log_likelihood
from ood_flow.errors import InputError
from ood_flow.flows.base import standard_normal_logprob
from ood_flow.flows.models import Flow, batchnorm_train, has_batchnorm


def require_image_flow(flow: Flow, what: str) -> None:
    """Raise a one-line InputError unless ``flow`` models images."""
    if flow.kind != "image":
        raise InputError(f"{what} needs an image model (realnvp or glow); this is a {flow.name} model over "
                         f"{flow.input_shape[0]}-dimensional vectors")


@dataclass
class Latents:
    """Latents of N images: ``z`` (N, C, H, W), the mean over the dequantization draws, and each
    image's bits/dim (of the discrete data, averaged over the draws)."""

    z: Tensor
    bits_per_dim: Tensor
    draws: int
    bn_train: bool
    has_batchnorm: bool = True


@torch.no_grad()
def image_latents(flow: Flow, x: Tensor, keys: Tensor, *, average: int = 1, seed: int = 0,
                  bn_train: bool = False) -> Latents:
    """Latents of uint8 images ``x`` (N, C, H, W) in one forward pass of ``average * N`` inputs.

    Args:
        keys: per-sample noise keys (``ood_flow.score.sample_keys(ids)``).
        average: number of dequantization draws whose latents are averaged (paper, Fig. 10:
            the noise averages out and the input's edges appear).
        bn_train: batch norm uses the statistics of this batch (the paper's train-mode latents).
    """
    require_image_flow(flow, "latents")
    if average < 1:
        raise InputError(f"--average must be at least 1, got {average}")
    device = next(flow.parameters()).device
    xin = dequantized_draws(x.to(device), keys.to(device), seed, average)
    flow.eval()
    with batchnorm_train(flow) if bn_train else contextlib.nullcontext():
        z, logdet = flow(xin)
    log_p = discrete_log_likelihood(standard_normal_logprob(z) + logdet, x)
    n = x.shape[0]
    bpd = bits_per_dim(log_p.view(average, n).mean(0), flow.dim)
    return Latents(z=z.view(average, n, *z.shape[1:]).mean(0).cpu(), bits_per_dim=bpd.cpu(), draws=average,
                   bn_train=bn_train, has_batchnorm=has_batchnorm(flow))


def box_mask(input_shape: tuple[int, ...], box: int) -> Tensor:
    """Bool mask over (C, H, W): a centred ``box`` x ``box`` square in every channel."""
    _, h, w = input_shape
    if not 1 <= box <= min(h, w):
        raise InputError(f"--box must be between 1 and {min(h, w)} for {h}x{w} images, got {box}")
    top, left = (h - box) // 2, (w - box) // 2
    mask = torch.zeros(input_shape, dtype=torch.bool)
    mask[:, top:top + box, left:left + box] = True
    return mask


@dataclass
class Resampled:
    """Originals (dequantized, N x C x H x W in [0, 1]), their reconstructions after re-sampling the
    latents at ``latent_mask``, the input box and how many latent variables were re-sampled."""

    original: Tensor
    resampled: Tensor
    box: Tensor
    latent_mask: Tensor

    @property
    def count(self) -> int:
        return int(self.latent_mask.sum())


@torch.no_grad()
def resample_box(flow: Flow, x: Tensor, keys: Tensor, *, box: int = 10, seed: int = 0,
                 temperature: float = 1.0) -> Resampled:
    """Replace the latents of a centred box by draws from the base distribution and invert (Appendix J.1).

    The latent positions are found by pushing the box's mask through the same squeezes, factor-outs
    and channel mixing as the data (:meth:`Flow.latent_mask`).
    """
    require_image_flow(flow, "resample")
    inside = box_mask(flow.input_shape, box)
    device = next(flow.parameters()).device
    latent = flow.latent_mask(inside).to(device)
    xin = dequantized_draws(x.to(device), keys.to(device), seed, 1)
    flow.eval()
    z, _ = flow(xin)
    g = torch.Generator(device=device).manual_seed(seed)
    noise = torch.randn(z.shape, generator=g, dtype=z.dtype, device=device) * temperature
    x_new, _ = flow.inverse(torch.where(latent, noise, z))
    return Resampled(original=xin.cpu(), resampled=_pixels(x_new).cpu(), box=inside, latent_mask=latent.cpu())


@torch.no_grad()
def draw_samples(flow: Flow, count: int, temperature: float, seed: int) -> Tensor:
    """``count`` samples at ``temperature``; the same seed gives the same base noise at every temperature."""
    if count < 1:
        raise InputError(f"--count must be at least 1, got {count}")
    if temperature < 0:
        raise InputError(f"--temperature must be non-negative, got {temperature}")
    device = next(flow.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    flow.eval()
    x = flow.sample(count, temperature=temperature, generator=g)
    return (_pixels(x) if flow.kind == "image" else torch.nan_to_num(x)).cpu()


def _pixels(x: Tensor) -> Tensor:
    """Continuous images as displayable values in [0, 1] (non-finite values from a bad inverse as 0)."""
    return torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0).clamp(0.0, 1.0)
