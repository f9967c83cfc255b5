"""``--model gaussian``: a full-covariance Gaussian fitted in closed form, scored and stored like a flow."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.covariance import LedoitWolf

import ood_flow
from cli_helpers import one_line_error, run, run_json
from helpers import jacobian_logdet
from ood_flow.flows.base import standard_normal_logprob


def _data(n=200, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(d, d, generator=g, dtype=torch.float64)
    return (torch.randn(n, d, generator=g, dtype=torch.float64) @ mix) * torch.linspace(0.5, 20, d) + 3.0


def _fitted(x, **opts):
    flow = ood_flow.create_flow("gaussian", (x.shape[1],), **opts).double()
    flow.fit_closed_form(x)
    return flow.eval()


def test_log_prob_is_the_multivariate_normal_density_of_the_raw_data():
    x = _data()
    flow = _fitted(x, shrinkage=0.0)
    want = torch.distributions.MultivariateNormal(x.mean(0), covariance_matrix=torch.cov(x.T, correction=0))
    torch.testing.assert_close(flow.log_prob(x[:7]), want.log_prob(x[:7]), rtol=1e-9, atol=1e-9)


def test_ledoit_wolf_shrinkage_is_sklearns_on_standardized_data():
    x = _data(n=30, d=12)  # few samples per dimension: shrinkage matters
    flow = _fitted(x, std_floor=0.0)
    z = (x - x.mean(0)) / x.std(0, unbiased=False)
    lw = LedoitWolf().fit(z.numpy())
    assert float(flow.body.shrinkage) == pytest.approx(lw.shrinkage_, rel=1e-9) and 0 < lw.shrinkage_ < 1
    # standardized density (the model's body) equals sklearn's Gaussian with the shrunk covariance
    h = flow.preprocess(x)[0]
    body_lp = standard_normal_logprob(flow.body(h)[0]) + flow.body(h)[1]
    dist = torch.distributions.MultivariateNormal(torch.from_numpy(lw.location_),
                                                  covariance_matrix=torch.from_numpy(lw.covariance_))
    torch.testing.assert_close(body_lp, dist.log_prob(z), rtol=1e-8, atol=1e-8)


def test_fewer_samples_than_dimensions_still_gives_finite_scores_and_constant_columns_are_fine():
    x = _data(n=10, d=30)
    x[:, 3] = 7.0  # a constant column
    flow = _fitted(x)
    lp = flow.log_prob(torch.cat([x, x + 0.5]))
    assert torch.isfinite(lp).all()
    with pytest.raises(ValueError, match="singular"):
        _fitted(x, shrinkage=0.0)


def test_round_trip_and_logdet_against_the_jacobian():
    x = _data()
    flow = _fitted(x)
    z, ld = flow(x[:3])
    back, ld_inv = flow.inverse(z)
    torch.testing.assert_close(back, x[:3], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ld + ld_inv, torch.zeros(3, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(ld[:2], jacobian_logdet(lambda v: flow(v)[0], x[:2].clone()), rtol=1e-8, atol=1e-8)
    assert flow.sample(4).shape == (4, 5)


@pytest.mark.parametrize("suffix", [".pt", ".h5"])
def test_save_load_gives_identical_scores_and_loads_without_code(tmp_path, suffix):
    x = _data().float()
    flow = ood_flow.create_flow("gaussian", (5,))
    flow.fit_closed_form(x)
    path = tmp_path / f"g{suffix}"
    ood_flow.save_model(flow, path)
    loaded = ood_flow.load_model(path)
    assert torch.equal(loaded.log_prob(x), flow.eval().log_prob(x))
    if suffix == ".pt":
        assert torch.load(path, weights_only=True)["model"] == "gaussian"


def test_train_and_score_through_the_cli(tmp_path):
    x = _data(n=120).numpy().astype(np.float32)
    np.save(tmp_path / "v.npy", x)
    summary = run_json("train", "--data", tmp_path / "v.npy", "--model", "gaussian", "--out", tmp_path / "g.pt")
    assert summary["family"] == "gaussian" and summary["steps"] == 0 and np.isfinite(summary["val_bpd"])
    said = run("train", "--data", tmp_path / "v.npy", "--model", "gaussian", "--out", tmp_path / "g2.pt").stderr
    assert "fitted in closed form" in said  # no optimiser, learning rate, epochs or preset claimed for it
    assert not any(word in said for word in ("adamw", " lr ", "epochs of", "preset"))
    scored = run_json("score", tmp_path / "v.npy", "--model", tmp_path / "g.pt", "--out", tmp_path / "s.h5")
    assert scored["n"] == 120 and np.isfinite(scored["mean_bits_per_dim"])
    one_line_error(run("train", "--data", "demo-mnist:test", "--limit", "20", "--model", "gaussian",
                       "--out", tmp_path / "i.pt", code=1), "need --model realnvp or glow")


def test_a_whitened_tabular_flow_starts_as_the_gaussian_baseline_and_whiten_is_refused_for_images(tmp_path):
    x = _data(n=300, d=6).float()
    gaussian = ood_flow.create_flow("gaussian", (6,))
    gaussian.fit_closed_form(x)
    flow = ood_flow.create_flow("tabular", (6,), hidden=8, couplings=2, whiten=True)
    flow.fit_preprocessing(x)  # standardization, then the Gaussian on the standardized vectors
    torch.testing.assert_close(flow.eval().log_prob(x[:9]), gaussian.eval().log_prob(x[:9]), rtol=1e-5, atol=1e-4)
    assert not any(p.requires_grad for p in flow.preprocess.parameters())  # fitted, not trained
    path = tmp_path / "w.pt"
    ood_flow.save_model(flow, path)
    assert torch.equal(ood_flow.load_model(path).log_prob(x), flow.log_prob(x))
    one_line_error(run("train", "--data", "demo-mnist:test", "--limit", "20", "--whiten", "--out", tmp_path / "i.pt",
                       code=2), "--whiten")
