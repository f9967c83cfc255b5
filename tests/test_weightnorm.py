"""Weight-normalised convolutions: the kernel ``g * v / ||v||`` and its gradients, on both of its paths."""

from __future__ import annotations

import pytest
import torch

from ood_flow.flows.weightnorm import WNConv2d, normalised


def _conv(kernel: int, channels_last: bool) -> WNConv2d:
    torch.manual_seed(0)
    conv = WNConv2d(24, 16, kernel)
    with torch.no_grad():
        conv.weight_g.mul_(torch.rand_like(conv.weight_g) + 0.5)
    if channels_last:
        conv.weight_v.data = conv.weight_v.data.contiguous(memory_format=torch.channels_last)
    return conv


@pytest.mark.parametrize("kernel", [1, 3])
@pytest.mark.parametrize("channels_last", [False, True])
def test_the_kernel_under_bf16_training_is_the_formula_with_its_gradients_and_layout(kernel, channels_last):
    """bf16 training takes torch's fused weight-norm kernel; float32 keeps the formula's bits."""
    conv = _conv(kernel, channels_last)
    g, v = conv.weight_g, conv.weight_v
    upstream = torch.randn(v.shape)
    reference = normalised(g, v)
    ref_g, ref_v = torch.autograd.grad((reference * upstream).sum(), (g, v))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = conv.weight()
    got_g, got_v = torch.autograd.grad((fused * upstream).sum(), (g, v))
    torch.testing.assert_close(fused, reference, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(got_g, ref_g, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_v, ref_v, rtol=1e-5, atol=1e-6)
    assert fused.stride() == v.stride()  # the convolution gets the layout its input has, no reorder
    assert torch.equal(conv.weight(), reference)  # float32: the formula itself, bit for bit


def test_the_fused_kernel_on_a_channels_last_view_has_the_right_gradient_by_finite_differences():
    """What ``WNConv2d.weight`` runs for a channels-last ``v`` under bf16 training, checked in float64."""
    g = torch.rand(4, 1, 1, 1, dtype=torch.float64, requires_grad=True)
    v = torch.randn(4, 3, 3, 3, dtype=torch.float64).contiguous(memory_format=torch.channels_last).requires_grad_()

    def kernel(g_, v_):
        return torch._weight_norm(v_.permute(0, 2, 3, 1), g_.permute(0, 2, 3, 1), 0).permute(0, 3, 1, 2)

    assert torch.autograd.gradcheck(kernel, (g, v))
    torch.testing.assert_close(kernel(g, v), normalised(g, v))


@pytest.mark.parametrize("model, options", [
    ("realnvp", {"channels": 8, "blocks": 1, "scales": 2}),
    ("realnvp", {"channels": 8, "blocks": 2, "mask": "horizontal"}),
    ("realnvp", {"channels": 8, "blocks": 2, "net": "resnet-noskip", "bottleneck": 4, "scales": 2}),
    ("glow", {"channels": 8, "scales": 2, "couplings": 2}),
])
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_every_gradient_has_its_parameters_strides(model, options, bf16):
    """DistributedDataParallel copies each gradient into a bucket laid out like its parameter and warns (under
    torchrun, on every rank) where the strides differ; a 1x1 weight-normalised kernel's gradient comes out with the
    standard strides, so its direction must have them too (both layouts are the same memory there)."""
    from ood_flow.flows import create_flow

    flow = create_flow(model, (1, 8, 8), **options)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        flow.log_prob(torch.rand(4, 1, 8, 8)).mean().backward()
    grads = [(name, p.stride(), p.grad.stride()) for name, p in flow.named_parameters() if p.grad is not None]
    assert len(grads) > 10 and [g for g in grads if g[1] != g[2]] == []
    kernels = [m.weight_v for m in flow.modules() if isinstance(m, WNConv2d) and m.weight_v.shape[2:] != (1, 1)]
    assert model == "glow" or all(v.is_contiguous(memory_format=torch.channels_last) and not v.is_contiguous()
                                  for v in kernels)  # the 3x3 kernels keep the st-networks' layout
