"""The model families of the paper, built by name: ``realnvp``, ``glow`` and ``tabular``, and the
closed-form ``gaussian`` baseline.

A :class:`Flow` is preprocessing (logit for images, standardization for vectors) followed by a
body of bijections, with a standard normal base distribution over every latent dimension. Image
latents keep the input's shape: each scale un-squeezes its output, so ``z`` is already the
"un-squeezed" latent image the paper visualises (Appendix E).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from ood_flow import names
from ood_flow.flows.base import Bijection, Sequential, standard_normal_logprob
from ood_flow.flows.configs import CONFIGS, resolve_config
from ood_flow.flows.coupling import AffineCoupling
from ood_flow.flows.gaussian import GaussianBody
from ood_flow.flows.layers import ActNorm, FactorOut, InvConv1x1, Squeeze, Unsqueeze
from ood_flow.flows.masks import create_mask
from ood_flow.flows.nets import NET_OPTIONS, create_net
from ood_flow.flows.preprocess import Logit, Standardize


class Flow(Bijection):
    """A normalizing flow ``x -> z`` with a standard normal base distribution.

    Attributes:
        name: registry name of the family (``realnvp``, ``glow``, ``tabular``).
        config: the resolved, frozen configuration (every option, defaults filled in).
        input_shape: shape of one input, (C, H, W) for images in [0, 1] or (D,) for vectors.
    """

    def __init__(self, name: str, config: Any, input_shape: tuple[int, ...], preprocess: Bijection, body: Bijection):
        super().__init__()
        self.name, self.config, self.input_shape = name, config, tuple(input_shape)
        self.preprocess, self.body = preprocess, body

    @property
    def kind(self) -> str:
        return "image" if len(self.input_shape) == 3 else "vector"

    @property
    def dim(self) -> int:
        return math.prod(self.input_shape)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check(x)
        h, ld_pre = self.preprocess(x)
        z, ld_body = self.body(h)
        return z, ld_pre + ld_body

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        h, ld_body = self.body.inverse(z)
        x, ld_pre = self.preprocess.inverse(h)
        return x, ld_body + ld_pre

    def log_prob_parts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(log N(z; 0, I), log|det dz/dx|)`` per sample; their sum is :meth:`log_prob`."""
        z, logdet = self(x)
        return standard_normal_logprob(z), logdet

    def log_prob(self, x: Tensor) -> Tensor:
        """Log-density of continuous inputs ``x`` in nats, shape ``(batch,)``."""
        log_prior, logdet = self.log_prob_parts(x)
        return log_prior + logdet

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` samples by inverting ``z ~ N(0, temperature^2 I)``."""
        p = next(self.parameters())
        z = torch.randn((n, *self.input_shape), generator=generator, dtype=p.dtype, device=p.device)
        return self.inverse(z * temperature)[0]

    def trace(self, x: Tensor, records: list | None = None) -> tuple[list[dict], Tensor]:
        """Run forward and return ``(records, z)``: per coupling its input, ``s``, ``t``, output and masks.

        Records are in the coupling's own space (after any squeeze and factor-out before it);
        ``z`` has the input's shape.
        """
        self._check(x)
        records = [] if records is None else records
        h, _ = self.preprocess(x)
        z, _ = self.body.trace(h, records)
        return records, z

    def latent_mask(self, mask: Tensor) -> Tensor:
        """Latent positions that hold the variables of input positions ``mask`` (bool, input shape)."""
        return self.body.push_mask(mask.bool())

    @property
    def closed_form(self) -> bool:
        """True when the model is fitted in one step (:meth:`fit_closed_form`), not trained by gradient."""
        return bool(getattr(self.body, "closed_form", False))

    @torch.no_grad()
    def fit_closed_form(self, x: Tensor) -> None:
        """Fit preprocessing and body on training data ``x`` (closed-form models only)."""
        if not self.closed_form:
            raise ValueError(f"{self.name} is trained by gradient steps, not fitted in closed form")
        self.fit_preprocessing(x)
        self.body.fit(self.preprocess(x)[0], self.config.shrinkage)

    def fit_preprocessing(self, x: Tensor) -> None:
        """Fit data statistics that are part of the model (vector standardization, then the whitening
        Gaussian of a tabular flow with ``whiten``, on the standardized vectors); no-op for images."""
        layers = list(self.preprocess.layers) if isinstance(self.preprocess, Sequential) else [self.preprocess]
        fitted = [isinstance(layer, (Standardize, GaussianBody)) for layer in layers]
        for i, layer in enumerate(layers):
            if fitted[i]:
                layer.fit(x)
            if any(fitted[i + 1:]):  # the next fitted layer sees this one's output
                x = layer(x)[0]

    def _check(self, x: Tensor) -> None:
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"{self.name} expects inputs of shape {self.input_shape}, got {tuple(x.shape[1:])}")


@contextlib.contextmanager
def batchnorm_train(flow: nn.Module) -> Iterator[nn.Module]:
    """Batch norm layers use the statistics of the current batch, without touching the stored ones.

    Used for the paper's Figure 2 and for the ``bn-train`` score (Song et al. 2019): results then
    depend on what else is in the batch.
    """
    norms = [m for m in flow.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.training, m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
             for m in norms]
    try:
        for m in norms:
            m.train()
            m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch: stored statistics stay
        yield flow
    finally:
        for m, (training, momentum, tracked) in zip(norms, saved):
            m.train(training)
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def has_batchnorm(flow: nn.Module) -> bool:
    """Whether any layer of ``flow`` is a batch norm (whose mode changes the scores)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in flow.modules())


def _net_factory(cfg, channels: int | None = None) -> Callable[..., nn.Module]:
    """Factory of ``cfg``'s st-network at width ``channels`` (default ``cfg.channels``)."""
    opts = {"channels": channels or cfg.channels, "blocks": cfg.blocks, "batchnorm": cfg.batchnorm,
            "bottleneck": cfg.bottleneck}
    opts = {k: v for k, v in opts.items() if k in NET_OPTIONS[cfg.net]}

    def make(cin: int, cout: int, spatial, checkerboard: bool = False) -> nn.Module:
        return create_net(cfg.net, cin, cout, spatial, double_input=checkerboard, **opts)

    return make


def _couplings(mask: str, shape: tuple[int, ...], count: int, make_net, first: int = 0) -> list[Bijection]:
    return [AffineCoupling(create_mask(mask, shape, first + i), shape, make_net) for i in range(count)]


def _realnvp_scale(shape: tuple[int, ...], scales: int, cfg, channels: int) -> Bijection:
    """One scale: 3 checkerboard, squeeze, 3 channel-wise, factor out half, recurse, un-squeeze.

    The last scale has 4 checkerboard couplings. The authors' first checkerboard coupling conditions
    on the pixels with ``i + j`` odd and their first channel-wise coupling changes the first half,
    the mirror image of oodflow's index 0 (hence ``first=1``); their factor-out keeps the first half
    and their st-networks are twice as wide after each squeeze. Layout ``v1`` is oodflow's format 1.
    """
    c, h, w = shape
    v1 = cfg.layout == "v1"
    first = 0 if v1 else 1
    if scales == 1:
        return Sequential(*_couplings("checkerboard", shape, 4, _net_factory(cfg, channels), first))
    squeezed, rest, wider = (4 * c, h // 2, w // 2), (2 * c, h // 2, w // 2), channels if v1 else 2 * channels
    return Sequential(
        *_couplings("checkerboard", shape, 3, _net_factory(cfg, channels), first),
        Squeeze(),
        *_couplings("channel", squeezed, 3, _net_factory(cfg, wider), first),
        FactorOut(_realnvp_scale(rest, scales - 1, cfg, wider), inner_first=not v1),
        Unsqueeze(),
    )


def build_realnvp(input_shape: tuple[int, ...], cfg) -> Flow:
    """Multi-scale RealNVP, or a single-scale stack of ``cfg.couplings`` couplings (Section 7)."""
    v1_stack = cfg.layout == "v1" and cfg.mask == "checkerboard"  # format 1: always multi-scale (4 at 1 scale)
    if cfg.scales > 1 or v1_stack:
        body = _realnvp_scale(input_shape, cfg.scales, cfg, cfg.channels)
    else:
        first = 1 if cfg.mask == "checkerboard" else 0  # the authors' orientation, as in the multi-scale model
        body = Sequential(*_couplings(cfg.mask, input_shape, cfg.couplings, _net_factory(cfg), first))
    return Flow("realnvp", cfg, input_shape, Logit(cfg.alpha), body)


def _glow_scale(shape: tuple[int, ...], scales: int, steps: int, make_net) -> Bijection:
    """Squeeze, ``steps`` x (ActNorm, 1x1 conv, coupling), factor out half and recurse, un-squeeze."""
    c, h, w = shape
    sq = (4 * c, h // 2, w // 2)
    layers: list[Bijection] = [Squeeze()]
    for _ in range(steps):
        layers += [ActNorm(4 * c), InvConv1x1(4 * c), AffineCoupling(create_mask("channel", sq, 0), sq, make_net)]
    if scales > 1:
        layers.append(FactorOut(_glow_scale((2 * c, h // 2, w // 2), scales - 1, steps, make_net)))
    layers.append(Unsqueeze())
    return Sequential(*layers)


def build_glow(input_shape: tuple[int, ...], cfg) -> Flow:
    body = _glow_scale(input_shape, cfg.scales, cfg.couplings, _net_factory(cfg))
    return Flow("glow", cfg, input_shape, Logit(cfg.alpha), body)


def build_tabular(input_shape: tuple[int, ...], cfg) -> Flow:
    """RealNVP for vectors: alternating half masks and MLP st-networks (paper, Appendix K.1)."""
    opts = {"hidden": cfg.hidden, "layers": cfg.layers, "batchnorm": cfg.batchnorm}
    make_net = lambda cin, cout, spatial, checkerboard=False: create_net("mlp", cin, cout, None, **opts)  # noqa: E731
    body = Sequential(*_couplings("channel", input_shape, cfg.couplings, make_net))
    pre = Standardize(input_shape[0], floor=cfg.std_floor) if cfg.standardize else Sequential()
    if cfg.whiten:
        pre = Sequential(pre, GaussianBody(input_shape[0]))
    return Flow("tabular", cfg, input_shape, pre, body)


def build_gaussian(input_shape: tuple[int, ...], cfg) -> Flow:
    """Full-covariance Gaussian on standardized vectors, fitted in closed form (see :mod:`ood_flow.flows.gaussian`)."""
    pre = Standardize(input_shape[0], floor=cfg.std_floor) if cfg.standardize else Sequential()
    return Flow("gaussian", cfg, input_shape, pre, GaussianBody(input_shape[0]))


BUILDERS: dict[str, Callable[[tuple[int, ...], Any], Flow]] = {
    "realnvp": build_realnvp,
    "glow": build_glow,
    "tabular": build_tabular,
    "gaussian": build_gaussian,
}
MODELS = tuple(BUILDERS)
names.check("models", MODELS, names.MODELS)


def create_flow(name: str, input_shape: tuple[int, ...], *, defaults: dict | None = None, **options) -> Flow:
    """Create flow ``name`` for inputs of ``input_shape``; every option has a default.

    ``defaults`` (e.g. a preset's) fill options not given, where they apply to the model.
    An option given that does not apply raises :class:`~ood_flow.errors.UsageError`.

    Example:
        >>> flow = create_flow("realnvp", input_shape=(1, 28, 28), mask="cycle", bottleneck=10)
        >>> lp = flow.log_prob(torch.rand(4, 1, 28, 28))   # (4,) nats
    """
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    input_shape = tuple(int(s) for s in input_shape)
    cfg = resolve_config(name, input_shape, options, defaults)
    return BUILDERS[name](input_shape, cfg)


def config_dict(flow: Flow) -> dict:
    """The flow's configuration as plain JSON-able values."""
    return dataclasses.asdict(flow.config)


__all__ = ["Flow", "create_flow", "MODELS", "CONFIGS", "batchnorm_train", "config_dict", "has_batchnorm"]
