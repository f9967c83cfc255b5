"""The shared battery over every layer, mask and model, in float64 with random weights."""

from __future__ import annotations

import copy

import pytest
import torch

from helpers import jacobian_logdet, randomize
from ood_flow.flows import create_flow
from ood_flow.flows.base import Bijection, Sequential, standard_normal_logprob
from ood_flow.flows.coupling import AffineCoupling
from ood_flow.flows.layers import ActNorm, FactorOut, InvConv1x1, Squeeze, Unsqueeze
from ood_flow.flows.masks import create_mask
from ood_flow.flows.nets import create_net
from ood_flow.flows.precision import st_autocast
from ood_flow.flows.preprocess import Logit, Standardize



@pytest.fixture(autouse=True)
def _float64():
    """Run each test in float64, and restore the default so later modules stay in float32."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _net(name, **opts):
    def make(cin, cout, spatial, checkerboard=False):
        double = {"double_input": checkerboard} if name.startswith("resnet") else {}
        return create_net(name, cin, cout, spatial, **double, **opts)

    return make


def _coupling(mask, shape, index=0, net="resnet", **opts):
    opts = opts or ({"hidden": 16} if net == "mlp" else {"channels": 8, "blocks": 2})
    return AffineCoupling(create_mask(mask, shape, index), shape, _net(net, **opts))


def _standardize():
    layer = Standardize(6)
    layer.fit(torch.randn(50, 6) * torch.arange(1.0, 7.0) + 3)
    return layer


class _UnderBf16Runtime(Bijection):
    """A layer run as under a bf16 runtime (:func:`st_autocast`), whose kernels may differ (InvConv1x1's matrix
    product); in float64 here, so only the arithmetic's structure is tested."""

    def __init__(self, layer: Bijection):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        with st_autocast(torch.bfloat16):
            return self.layer(x)

    def inverse(self, y):
        with st_autocast(torch.bfloat16):
            return self.layer.inverse(y)


LAYERS = {
    "logit": (lambda: Logit(0.05), (1, 8, 8)),
    "standardize": (_standardize, (6,)),
    "squeeze": (Squeeze, (3, 8, 8)),
    "unsqueeze": (Unsqueeze, (4, 4, 4)),
    "actnorm": (lambda: ActNorm(3), (3, 8, 8)),
    "actnorm-vector": (lambda: ActNorm(6, ndim=1), (6,)),
    "invconv": (lambda: InvConv1x1(4), (4, 4, 4)),
    "invconv-bf16-runtime": (lambda: _UnderBf16Runtime(InvConv1x1(4)), (4, 4, 4)),
    "factor-out": (lambda: FactorOut(Sequential(Squeeze(), _coupling("channel", (8, 2, 2)), Unsqueeze())), (4, 4, 4)),
    "factor-out-inner-first": (lambda: FactorOut(Sequential(Squeeze(), _coupling("channel", (8, 2, 2), 1),
                                                            Unsqueeze()), inner_first=True), (4, 4, 4)),
    "mlp-half": (lambda: _coupling("channel", (6,), 1, net="mlp"), (6,)),
}
for _mask in ("checkerboard", "horizontal", "vertical", "cycle"):
    for _c in (1, 3):
        for _i in (0, 1, 3):
            LAYERS[f"{_mask}-c{_c}-i{_i}"] = (lambda m=_mask, c=_c, i=_i: _coupling(m, (c, 8, 8), i), (_c, 8, 8))
for _net_name in ("resnet-noskip", "resnet-v1"):
    for _mask in ("checkerboard", "channel"):
        LAYERS[f"{_mask}-{_net_name}"] = (lambda m=_mask, n=_net_name: _coupling(m, (4, 4, 4), 1, net=n, channels=8,
                                                                                blocks=2), (4, 4, 4))
LAYERS["checkerboard-resnet-no-batchnorm"] = (lambda: _coupling("checkerboard", (2, 6, 6), 0, channels=8, blocks=1,
                                                                batchnorm=False), (2, 6, 6))
LAYERS["horizontal-resnet-no-blocks"] = (lambda: _coupling("horizontal", (1, 6, 6), 1, channels=8, blocks=0), (1, 6, 6))
for _net_name in ("glow", "highway"):
    LAYERS[f"channel-{_net_name}"] = (lambda n=_net_name: _coupling("channel", (4, 4, 4), 1, net=n, channels=8),
                                      (4, 4, 4))
LAYERS["checkerboard-bottleneck"] = (lambda: _coupling("checkerboard", (1, 8, 8), net="resnet-noskip", bottleneck=5,
                                                       channels=8, blocks=2), (1, 8, 8))
LAYERS["checkerboard-bottleneck-1block"] = (lambda: _coupling("checkerboard", (1, 8, 8), 1, net="resnet-noskip",
                                                              bottleneck=3, channels=4, blocks=1), (1, 8, 8))
LAYERS["checkerboard-bottleneck-v1"] = (lambda: _coupling("checkerboard", (1, 8, 8), net="resnet-v1", bottleneck=5,
                                                          channels=8, blocks=2), (1, 8, 8))
LAYERS["cycle-no-batchnorm"] = (lambda: _coupling("cycle", (3, 8, 6), 2, batchnorm=False, channels=8, blocks=1),
                                (3, 8, 6))

MODELS = {
    "realnvp": ("realnvp", (1, 8, 8), {"channels": 8, "blocks": 1, "scales": 2}),
    "realnvp-3scales-rgb": ("realnvp", (3, 8, 8), {"channels": 8, "blocks": 1, "scales": 3}),
    "realnvp-noskip": ("realnvp", (1, 8, 8), {"net": "resnet-noskip", "channels": 4, "blocks": 2, "scales": 2}),
    "realnvp-1scale-checkerboard": ("realnvp", (1, 8, 8), {"channels": 4, "blocks": 1, "scales": 1, "couplings": 3}),
    "realnvp-v1": ("realnvp", (1, 8, 8), {"net": "resnet-v1", "layout": "v1", "channels": 8, "blocks": 1,
                                          "scales": 2, "couplings": 8}),
    "realnvp-horizontal": ("realnvp", (1, 8, 8), {"mask": "horizontal", "channels": 8, "blocks": 1, "couplings": 4}),
    "realnvp-vertical": ("realnvp", (3, 8, 8), {"mask": "vertical", "channels": 8, "blocks": 1, "couplings": 3}),
    "realnvp-cycle-bottleneck": ("realnvp", (1, 8, 8), {"mask": "cycle", "bottleneck": 4, "channels": 8, "blocks": 2,
                                                         "couplings": 5}),
    "realnvp-horizontal-bottleneck-v1": ("realnvp", (1, 8, 8), {"mask": "horizontal", "bottleneck": 4, "channels": 4,
                                                                 "blocks": 2, "couplings": 3, "net": "resnet-v1",
                                                                 "layout": "v1", "scales": 1}),
    "glow": ("glow", (1, 8, 8), {"channels": 8, "couplings": 2, "scales": 2}),
    "glow-highway-rgb": ("glow", (3, 8, 8), {"channels": 8, "couplings": 2, "scales": 3, "net": "highway"}),
    "tabular": ("tabular", (6,), {"hidden": 16, "couplings": 4}),
    "tabular-odd": ("tabular", (7,), {"hidden": 16, "couplings": 3, "standardize": False}),
    "tabular-whiten": ("tabular", (6,), {"hidden": 16, "couplings": 3, "whiten": True}),
}


def _layer(key):
    make, shape = LAYERS[key]
    layer = randomize(make().double()).eval()
    return layer, shape


def _input(shape, batch=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((batch, *shape), generator=g) * 0.9 + 0.05


def _model(key):
    name, shape, opts = MODELS[key]
    flow = create_flow(name, shape, **opts).double()
    flow.fit_preprocessing(torch.randn(40, *shape) * 2 + 1)
    return randomize(flow).eval(), shape


def _bijections():
    return [pytest.param(_layer, k, id=k) for k in LAYERS] + [pytest.param(_model, k, id=k) for k in MODELS]


@pytest.mark.parametrize("make,key", _bijections())
def test_round_trip_and_logdets_cancel(make, key):
    f, shape = make(key)
    x = _input(shape)
    y, ld = f(x)
    x2, ld_inv = f.inverse(y)
    assert ld.shape == (3,) and ld_inv.shape == (3,)
    torch.testing.assert_close(x2, x, atol=1e-6, rtol=0)
    torch.testing.assert_close(ld + ld_inv, torch.zeros(3), atol=1e-6, rtol=0)


@pytest.mark.parametrize("make,key", _bijections())
def test_logdet_matches_brute_force_jacobian(make, key):
    f, shape = make(key)
    x = _input(shape, batch=2)
    _, ld = f(x)
    expected = jacobian_logdet(lambda v: f(v)[0], x)
    torch.testing.assert_close(ld, expected, atol=1e-6, rtol=1e-6)
    assert ld.abs().max() > 1e-3 or key in ("squeeze", "unsqueeze"), "weights too trivial to test the log-det"


@pytest.mark.parametrize("key", list(MODELS))
def test_log_prob_is_change_of_variables(key):
    flow, shape = _model(key)
    x = _input(shape, batch=2)
    z, _ = flow(x)
    expected = standard_normal_logprob(z) + jacobian_logdet(lambda v: flow(v)[0], x)
    torch.testing.assert_close(flow.log_prob(x), expected, atol=1e-6, rtol=1e-6)
    log_prior, logdet = flow.log_prob_parts(x)
    torch.testing.assert_close(log_prior + logdet, flow.log_prob(x))


@pytest.mark.parametrize("key", list(MODELS))
def test_every_parameter_gets_a_gradient(key):
    flow, shape = _model(key)
    flow.train()
    (-flow.log_prob(_input(shape, batch=4)).mean()).backward()
    # The coupling's factor is g * v / |v| per channel: v / |v| is v's sign, so v's gradient is always 0
    # (the authors' model has this parameter too, and it counts in their parameter totals).
    # Parameters fitted in closed form (the whitening Gaussian of a tabular flow) are not trained by gradient.
    missing = [n for n, p in flow.named_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
               and not n.endswith("rescale.weight_v")]
    assert not missing
    assert any(n.endswith("rescale.weight_g") for n, _ in flow.named_parameters())


@pytest.mark.parametrize("key", list(MODELS))
def test_sample_has_input_shape_and_inverts(key):
    """A sample is the inverse of the base noise drawn from the generator, and the forward pass gives that
    noise back. (Seeded weights and a low temperature: random weights amplify the noise, and the logit
    cannot invert pixels that round to 0 or 1.)"""
    torch.manual_seed(0)
    flow, shape = _model(key)
    x = flow.sample(5, temperature=0.02, generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, *shape) and torch.isfinite(x).all()
    z = torch.randn((5, *shape), generator=torch.Generator().manual_seed(0)) * 0.02
    torch.testing.assert_close(flow.inverse(z)[0], x, rtol=0, atol=0)
    torch.testing.assert_close(flow(x)[0], z, rtol=1e-6, atol=1e-6)


def _norms(flow):
    return [m for m in flow.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def test_batchnorm_train_and_eval_agree_when_statistics_match():
    """In eval mode with running statistics equal to each layer's batch statistics, the log-likelihood
    equals the train-mode one (batch norm is then the same function in both modes)."""
    flow = randomize(create_flow("realnvp", (1, 8, 8), channels=4, blocks=1, scales=2))
    x = _input((1, 8, 8), batch=6)
    norms, per_channel = _norms(flow), {}
    assert norms
    hooks = [m.register_forward_pre_hook(lambda m, a: per_channel.__setitem__(m, a[0].numel() // a[0].shape[1]))
             for m in norms]
    flow.train()
    for m in norms:
        m.momentum = 1.0  # the running statistics become this batch's
    with torch.no_grad():
        lp_train = flow.log_prob(x)
    for hook in hooks:
        hook.remove()
    for m in norms:  # torch stores the unbiased variance but normalises with the biased one
        m.running_var.mul_((per_channel[m] - 1) / per_channel[m])
    with torch.no_grad():
        lp_eval = flow.eval().log_prob(x)
    torch.testing.assert_close(lp_eval, lp_train)


def test_batchnorm_train_uses_batch_statistics_and_keeps_the_stored_ones():
    """``batchnorm_train`` gives the train-mode result, differs from eval mode with other stored
    statistics, and changes no stored statistic."""
    from ood_flow.flows import batchnorm_train

    flow = randomize(create_flow("realnvp", (1, 8, 8), mask="horizontal", channels=4, blocks=1, couplings=1)).eval()
    x = _input((1, 8, 8), batch=6)
    assert _norms(flow)
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    with torch.no_grad(), batchnorm_train(flow):
        lp_bn_train = flow.log_prob(x)
    assert all(torch.equal(before[k], v) for k, v in flow.state_dict().items()), "stored statistics changed"
    assert not flow.training
    with torch.no_grad():
        lp_eval = flow.log_prob(x)
        lp_train = copy.deepcopy(flow).train().log_prob(x)
    torch.testing.assert_close(lp_bn_train, lp_train)
    assert not torch.allclose(lp_bn_train, lp_eval)


def test_logit_gives_the_formulas_bits_computing_each_logarithm_once():
    """Dinh et al.'s logit and its log-det, with log p and log(1 - p) each computed once (log1p is the slowest
    operator of a Glow scoring pass on CPU): the same operations on the same values as the formula written out,
    so the same bits, pixels at 0 and 1 included."""
    import math

    x = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    x[0, 0, 0, 0], x[-1, -1, -1, -1] = 0.0, 1.0
    p = 0.05 + 0.9 * x
    y, ld = Logit(0.05)(x)
    assert torch.equal(y, torch.log(p) - torch.log1p(-p))
    assert torch.equal(ld, (math.log(0.9) - torch.log(p) - torch.log1p(-p)).flatten(1).sum(1))
