"""``train --noise``: Gaussian noise added to training vectors (a regulariser for flows on a few thousand
feature vectors), a pure function of (seed, epoch, sample index); validation and scoring see clean vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ood_flow
from cli_helpers import image_npz, one_line_error, run, run_json
from ood_flow.dequantize import counter_normal
from ood_flow.distributed import SINGLE
from ood_flow.train import TrainConfig, Trainer
from ood_flow.train.losses import BatchLoss
from ood_flow.train.objective import noise_seed


def _vectors(n=400, d=3, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * torch.tensor([1.0, 50.0, 0.01]) + torch.tensor([0.0, 3.0, -7.0])


def test_counter_normal_is_standard_normal_and_keyed_by_sample_not_batch():
    keys = torch.arange(100_000)
    z = counter_normal(keys, (2,), seed=5)
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01
    assert abs(float((z[:, 0] * z[:, 1]).mean())) < 0.01  # positions are independent
    assert abs(float((z.abs() < 1.96).float().mean()) - 0.95) < 0.005  # the normal's shape, not only its moments
    assert torch.equal(counter_normal(keys[[7, 3]], (2,), seed=5), z[[7, 3]])  # the same draw in any batch
    assert not torch.equal(counter_normal(keys[:10], (2,), seed=6), z[:10])


def test_training_input_is_the_vector_plus_scaled_noise_and_validation_is_clean(tmp_path):
    x = _vectors()
    flow = ood_flow.create_flow("tabular", (3,), hidden=8, couplings=2)
    cfg = TrainConfig(epochs=1, batch_size=400, noise=0.5, val_fraction=0.1)
    trainer = Trainer(flow, x, cfg, tmp_path / "m.pt")
    std = x[trainer.train_idx].std(0, correction=0)
    torch.testing.assert_close(trainer.batch_loss.noise_std, 0.5 * std)
    seen = []
    loss = BatchLoss(x, None, trainer.cfg, lambda v: seen.append(v) or v.sum(1) * 0, SINGLE, "cpu",
                     noise_std=trainer.batch_loss.noise_std)
    idx = trainer.train_idx
    loss(idx, epoch=0, step=0)
    added = seen[0] - x[idx]
    want = counter_normal(idx, (3,), noise_seed(trainer.cfg.seed, 0, 0)) * 0.5 * std  # keyed by sample and epoch
    torch.testing.assert_close(added, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(added.std(0, correction=0) / std, torch.full((3,), 0.5), atol=0.06, rtol=0)
    loss(idx, epoch=1, step=1)
    assert not torch.equal(seen[1], seen[0])  # fresh noise each epoch
    clean = Trainer(ood_flow.create_flow("tabular", (3,), hidden=8, couplings=2), x,
                    TrainConfig(epochs=1, batch_size=400, val_fraction=0.1), tmp_path / "c.pt")
    clean.flow.load_state_dict(flow.state_dict())
    for t in (trainer, clean):
        t.fit_preprocessing()
    assert trainer.validate() == clean.validate()  # validation never adds noise


def test_noise_changes_training_and_is_recorded_in_the_model_file(tmp_path):
    x = _vectors()
    runs = {}
    for noise in (0.0, 0.3):
        torch.manual_seed(0)
        flow = ood_flow.create_flow("tabular", (3,), hidden=8, couplings=2)
        result = Trainer(flow, x, TrainConfig(epochs=2, batch_size=100, noise=noise), tmp_path / f"{noise}.pt").run()
        runs[noise] = result.history[-1]["train_bpd"]
    assert runs[0.0] != runs[0.3]
    assert ood_flow.load_checkpoint(tmp_path / "0.3.pt")[1]["train_config"]["noise"] == 0.3


def _csv(path, n=200):
    rng = np.random.default_rng(0)
    np.savetxt(path, rng.normal(size=(n, 3)), delimiter=",", header="a,b,c", comments="")
    return path


def test_noise_through_the_cli_and_its_bad_uses(tmp_path):
    data = _csv(tmp_path / "t.csv")
    common = ["--hidden", "8", "--couplings", "2", "--epochs", "1", "--batch-size", "50", "--quiet"]
    out = run_json("train", "--data", data, "--model", "tabular", "--noise", "0.1", "--out", tmp_path / "m.pt",
                   *common)
    assert np.isfinite(out["val_bpd"])
    one_line_error(run("train", "--data", data, "--model", "tabular", "--noise", "0.2", "--resume", "--epochs", "2",
                       "--out", tmp_path / "m.pt", code=2), "--noise cannot change", "0.1")
    one_line_error(run("train", "--data", data, "--model", "tabular", "--noise", "-1", "--out", tmp_path / "n.pt",
                       *common, code=2), "--noise")
    one_line_error(run("train", "--data", data, "--model", "gaussian", "--noise", "0.1", "--out", tmp_path / "g.pt",
                       "--quiet", code=2), "--noise", "closed form")
    one_line_error(run("train", "--data", data, "--model", "tabular", "--perturb", "0.1", "--out", tmp_path / "p.pt",
                       *common, code=2), "--perturb", "vectors")
    images = image_npz(tmp_path / "i.npz")
    one_line_error(run("train", "--data", images, "--noise", "0.1", "--out", tmp_path / "i.pt", "--channels", "4",
                       "--blocks", "1", "--max-steps", "1", "--quiet", code=2), "--noise", "images")
    assert not any((tmp_path / f"{n}.pt").exists() for n in ("n", "g", "p", "i"))


@pytest.mark.parametrize("noise", [float("nan"), float("inf")])
def test_non_finite_noise_is_refused(tmp_path, noise):
    one_line_error(run("train", "--data", _csv(tmp_path / "t.csv"), "--model", "tabular", "--noise", str(noise),
                       "--out", tmp_path / "m.pt", "--quiet", code=2), "--noise")


def test_with_features_the_refusals_come_before_any_embedding(tmp_path):
    # An unknown backbone would be the error if the images were embedded first.
    one_line_error(run("train", "--data", "demo-mnist:test", "--features", "no_such_backbone", "--perturb", "0.1",
                       "--out", tmp_path / "p.pt", "--quiet", code=2), "--perturb", "--features")
    one_line_error(run("train", "--data", "demo-mnist:test", "--features", "no_such_backbone", "--model", "gaussian",
                       "--noise", "0.1", "--out", tmp_path / "g.pt", "--quiet", code=2), "--noise", "closed form")


def test_the_refusal_is_the_only_line_even_without_quiet(tmp_path):
    # The data kind is known once the data are read; the refusal comes before the preset is announced.
    one_line_error(run("train", "--data", image_npz(tmp_path / "i.npz"), "--noise", "0.1", "--out", tmp_path / "i.pt",
                       code=2), "--noise", "images")
    one_line_error(run("train", "--data", _csv(tmp_path / "t.csv"), "--perturb", "0.1", "--out", tmp_path / "p.pt",
                       code=2), "--perturb", "vectors")
