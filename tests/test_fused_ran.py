"""The fused scoring path under the default suite: it really runs for the default model (no silent
fallback to the plain modules), and on a trained model, through ``score_source``, it gives the plain modules'
scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ood_flow import score_source
from ood_flow.data import SourceOptions
from ood_flow.flows import create_flow, fused
from ood_flow.runtime import Runtime


@pytest.fixture
def counted_kernel(monkeypatch):
    """oneDNN's fused conv kernel wrapped to count its calls, in every fused path made meanwhile."""
    kernel = fused.find_kernel()
    if kernel is None:
        pytest.skip("this torch build has no oneDNN fused convolution; the plain modules score")
    calls = [0]

    def counting(*args):
        calls[0] += 1
        return kernel(*args)

    monkeypatch.setattr(fused, "find_kernel", lambda: counting)
    return calls


def test_the_fused_kernel_runs_for_every_st_network_of_the_default_model(counted_kernel):
    flow = Runtime().prepare(create_flow("realnvp", (1, 28, 28))).eval()
    nets = [m.net for m in flow.modules() if hasattr(m, "net") and hasattr(m, "mask")]
    blocks = flow.config.blocks
    with torch.inference_mode():
        flow.log_prob(torch.rand(2, 1, 28, 28))
    # one conv+BN+ReLU per residual block (its first convolution) and the stem's, in every st-network
    assert counted_kernel[0] >= len(nets) * blocks > 0
    assert fused.path_of(flow).failure is None, "the fused kernel failed and fell back to the plain modules"


def test_fused_scores_equal_the_plain_modules_on_a_trained_model(small_fmnist_model, counted_kernel, monkeypatch):
    limit = SourceOptions(limit=200)
    fast = score_source("demo-mnist", small_fmnist_model, options=limit).arrays["bits_per_dim"]
    assert counted_kernel[0] > 0
    monkeypatch.setattr(fused, "find_kernel", lambda: None)  # no kernel: every st-network runs its plain modules
    plain = score_source("demo-mnist", small_fmnist_model, options=limit).arrays["bits_per_dim"]
    assert abs(fast - plain).max() <= 1e-5 and not np.array_equal(fast, plain)  # equal: the same path twice
