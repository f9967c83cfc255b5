"""The pieces learn: a few hundred steps of maximum likelihood on real FashionMNIST lower bits/dim
clearly, for RealNVP with each mask and for Glow (issue: core flow package)."""

from __future__ import annotations

import pytest
import torch

import ood_flow
from ood_flow.data import load_source
from ood_flow.train import TrainConfig, Trainer

pytestmark = pytest.mark.slow  # real-data training: five models, 100 steps each

STEPS = 100
MODELS = {
    "realnvp-checkerboard": ("realnvp", {"channels": 8, "blocks": 1}),
    "realnvp-horizontal": ("realnvp", {"mask": "horizontal", "channels": 8, "blocks": 1}),
    "realnvp-vertical": ("realnvp", {"mask": "vertical", "channels": 8, "blocks": 1}),
    "realnvp-cycle": ("realnvp", {"mask": "cycle", "channels": 8, "blocks": 1}),
    "glow": ("glow", {"couplings": 2, "channels": 16, "blocks": 1}),
}


@pytest.fixture(scope="module")
def fashion(data_dir):
    return load_source("fashionmnist:train", data_dir=data_dir, limit=800, download=False).x


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_few_hundred_steps_lower_bits_per_dim_clearly(name, fashion, tmp_path):
    model, options = MODELS[name]
    torch.manual_seed(0)
    flow = ood_flow.create_flow(model, tuple(fashion.shape[1:]), **options)
    cfg = TrainConfig(epochs=100, max_steps=STEPS, batch_size=32, lr=1e-3, weight_decay=0.0, optimizer="adam",
                      val_fraction=0.1, seed=0)
    trainer = Trainer(flow, fashion, cfg, tmp_path / "m.pt")
    before = trainer.validate()
    after = trainer.run().last["val_bpd"]
    print(f"{name}: {before:.3f} -> {after:.3f} bits/dim")
    assert after < before - 1.0, f"{name}: validation bits/dim {before:.3f} -> {after:.3f}"
