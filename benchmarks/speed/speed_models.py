"""Matched oodflow / normflows models for ``speed.py``, and the one loss both are trained with.

Both libraries get the same architecture as far as normflows allows:

* **glow** — multi-scale Glow: ``scales`` levels of ``steps`` x (ActNorm, invertible 1x1 conv with
  LU weights, affine coupling on a channel split) on squeezed images, half the channels factored
  out per level. The st-network is Glow's conv3x3-ReLU-conv1x1-ReLU-conv3x3 in both
  (``net="glow"`` here, ``nf.nets.ConvNet2d`` with kernels (3, 1, 3) in normflows). The only
  difference left is the scale map: ``scale * tanh`` here, ``sigmoid(. + 2)`` in normflows.
* **realnvp** — multi-scale RealNVP: per level 3 checkerboard couplings, squeeze, 3 channel
  couplings, factor out half; 4 checkerboard couplings at the last level; residual st-networks with
  batch norm of the same depth (``ResNetST`` here, ``nf.nets.ConvResidualNet`` in normflows, whose
  input/output convs are 1x1 where ours are 3x3). Channel couplings are the same in both (one
  st-network of ``hidden`` channels on half the channels). Checkerboard couplings come two ways:

  - ``normflows`` (the headline): RealNVP's masked coupling at full resolution, as ours, with
    normflows' ``MaskedAffineFlow``. It takes separate ``s`` and ``t`` networks, so each gets
    ``hidden / sqrt(2)`` channels rounded to a multiple of 8 (oneDNN runs 45 channels at 60% of
    the speed of 48): the pair costs about the FLOPs and parameters of our one network (+12% at
    64 -> 48 channels; the per-FLOP speedup removes the difference).
  - ``normflows-halfres``: normflows' ``AffineCouplingBlock`` with ``split_mode="checkerboard"``,
    which packs the conditioning pixels into a half-width image: one network of ``hidden``
    channels that sees half the pixels, so fewer FLOPs and a different model. Compare per FLOP.

Both are wrapped as ``log_prob(x)`` of continuous inputs in [0, 1] with the logit preprocessing
(``alpha``) inside the likelihood.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from ood_flow.dequantize import LOG_256, bits_per_dim
from ood_flow.flows import create_flow
from ood_flow.runtime import Runtime

ALPHA = 0.05


def bits_per_dim_8bit(log_density: Tensor, d: int) -> Tensor:
    """Bits/dim of 8-bit data from a model's log-density of its dequantized inputs in [0, 1) (the benchmark
    keeps only the dequantized floats, which ``ood_flow.dequantize.discrete_log_likelihood`` cannot tell
    from vectors)."""
    return bits_per_dim(log_density - d * LOG_256, d)


def bits_per_dim_loss(log_prob: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Mean negative log-likelihood of 8-bit data in bits/dim, from dequantized inputs in [0, 1)."""
    return bits_per_dim_8bit(log_prob(x), x[0].numel()).mean()


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def oodflow_model(arch: str, shape: tuple[int, ...], size: dict, net: str | None = None) -> nn.Module:
    """Our model for ``arch`` at ``size`` (keys: scales, steps, hidden, blocks), prepared for the CPU as the
    commands prepare it (:meth:`ood_flow.runtime.Runtime.prepare`: channels-last, the fused scoring path).
    ``net``: RealNVP's st-network (default: the authors' ``resnet``; ``skip_cost.py`` also times ``resnet-noskip``)."""
    if arch == "glow":
        flow = create_flow("glow", shape, net="glow", batchnorm=False, channels=size["hidden"],
                           couplings=size["steps"], scales=size["scales"], alpha=ALPHA)
    elif arch == "realnvp":
        flow = create_flow("realnvp", shape, channels=size["hidden"], blocks=size["blocks"],
                           scales=size["scales"], alpha=ALPHA, **({"net": net} if net else {}))
    else:
        raise ValueError(f"unknown architecture {arch!r}")
    return Runtime().prepare(flow)


def normflows_model(arch: str, shape: tuple[int, ...], size: dict, halfres: bool = False) -> nn.Module:
    import normflows as nf

    if arch == "glow":
        q0, flows, merges = _nf_glow(nf, shape, size)
    else:
        checkerboards = _checkerboards_halfres if halfres else _checkerboards_masked
        q0, flows, merges = _nf_realnvp(nf, shape, size, checkerboards)
    return _NFWrapper(nf.MultiscaleFlow(q0, flows, merges, transform=nf.transforms.Logit(alpha=ALPHA),
                                        class_cond=False))


class _NFWrapper(nn.Module):
    """``log_prob(x)`` like ours (normflows' ``MultiscaleFlow.log_prob`` also takes a class label)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def log_prob(self, x: Tensor) -> Tensor:
        return self.model.log_prob(x, None)


def _latent_shapes(shape: tuple[int, ...], scales: int) -> list[tuple[int, int, int]]:
    """normflows' level ``i`` latent (coarsest level first), as in its Glow example."""
    c, h, w = shape
    out = [(c * 2 ** (scales + 1), h // 2**scales, w // 2**scales)]
    for i in range(1, scales):
        k = scales - i
        out.append((c * 2**k, h // 2**k, w // 2**k))
    return out


def _nf_glow(nf, shape, size):
    c, scales = shape[0], size["scales"]
    q0, flows, merges = [], [], []
    for i, latent in enumerate(_latent_shapes(shape, scales)):
        channels = c * 2 ** (scales + 1 - i)
        flows.append([nf.flows.GlowBlock(channels, size["hidden"], split_mode="channel", scale=True)
                      for _ in range(size["steps"])] + [nf.flows.Squeeze()])
        merges += [nf.flows.Merge()] if i > 0 else []
        q0.append(nf.distributions.DiagGaussian(latent, trainable=False))
    return q0, flows, merges


def _nf_coupling(nf, channels: int, mode: str, size: dict) -> nn.Module:
    """normflows affine coupling (exp scale, like RealNVP) with a zero-initialised residual st-network."""
    cin = channels if "checkerboard" in mode else channels // 2
    net = _zero_last(nf.nets.ConvResidualNet(cin, 2 * cin, size["hidden"], num_blocks=size["blocks"],
                                             use_batch_norm=True))
    return nf.flows.AffineCouplingBlock(net, scale=True, scale_map="exp", split_mode=mode)


def _checkerboards_halfres(nf, shape: tuple[int, int, int], count: int, size: dict) -> list[nn.Module]:
    """normflows' checkerboard split: the st-network sees the conditioning pixels packed half-width."""
    return [_nf_coupling(nf, shape[0], "checkerboard" + ("_inv" if i % 2 else ""), size) for i in range(count)]


def _checkerboards_masked(nf, shape: tuple[int, int, int], count: int, size: dict) -> list[nn.Module]:
    """RealNVP's masked checkerboard coupling (``nf.flows.MaskedAffineFlow``) at full resolution.

    normflows' layer takes separate ``s`` and ``t`` networks; each gets ``hidden / sqrt(2)``
    channels, to the nearest multiple of 8, so that the pair costs about the FLOPs and parameters
    of our single st-network.
    """
    c, h, w = shape
    i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    width = max(8, 8 * round(size["hidden"] / math.sqrt(2) / 8))
    layers = []
    for k in range(count):
        b = ((i + j + k) % 2 == 0).float().expand(c, h, w).contiguous()
        s, t = (_zero_last(nf.nets.ConvResidualNet(c, c, width, num_blocks=size["blocks"], use_batch_norm=True))
                for _ in range(2))
        layers.append(nf.flows.MaskedAffineFlow(b, t=t, s=s))
    return layers


def _zero_last(net: nn.Module) -> nn.Module:
    """A new coupling is the identity, as in ours."""
    nn.init.zeros_(net.final_layer.weight)
    nn.init.zeros_(net.final_layer.bias)
    return net


def _nf_realnvp(nf, shape, size, checkerboards):
    """Coarsest level first; each list is in normflows' latent -> data order (reversed data -> latent).

    As in the authors' RealNVP (and ours), the st-networks' width doubles at every squeeze: the
    checkerboard couplings of level ``k`` (0 the finest) get ``hidden * 2**k`` channels and the
    channel-wise couplings after its squeeze ``hidden * 2**(k+1)``."""
    c, h, w = shape
    scales = size["scales"]
    at = lambda k: {**size, "hidden": size["hidden"] * 2**k}  # noqa: E731
    k = scales - 1
    q0 = [nf.distributions.DiagGaussian((c * 2**k, h // 2**k, w // 2**k), trainable=False)]
    flows = [checkerboards(nf, (c * 2**k, h // 2**k, w // 2**k), 4, at(k))[::-1]]
    merges = []
    for k in range(scales - 2, -1, -1):
        ck, hk, wk = c * 2**k, h // 2**k, w // 2**k
        chan = [_nf_coupling(nf, 4 * ck, "channel" + ("_inv" if j % 2 else ""), at(k + 1)) for j in range(3)]
        flows.append((checkerboards(nf, (ck, hk, wk), 3, at(k)) + [nf.flows.Squeeze()] + chan)[::-1])
        merges.append(nf.flows.Merge())
        q0.append(nf.distributions.DiagGaussian((2 * ck, hk // 2, wk // 2), trainable=False))
    return q0, flows, merges


def perturbed_twins(arch: str, size: dict, names: tuple[str, str]) -> dict[str, nn.Module]:
    """Two oodflow models of ``speed.py``'s ``arch`` and ``size`` on 28 x 28 images, in eval mode, with the same
    parameters, moved away from the zero initialisation (so that every convolution matters), under ``names``:
    one model each for two ways of running it that a script compares."""
    torch.manual_seed(0)
    first = oodflow_model(arch, (1, 28, 28), size).eval()
    with torch.no_grad():
        for p in first.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    second = oodflow_model(arch, (1, 28, 28), size).eval()
    second.load_state_dict(first.state_dict())
    return {names[0]: first, names[1]: second}
