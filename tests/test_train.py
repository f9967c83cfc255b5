"""The training loop: learning, exact resume, non-finite losses, negative training term."""

from __future__ import annotations

import math

import pytest
import torch

import ood_flow
from ood_flow.train import TrainConfig, Trainer, TrainEvents, checkpoint_path, load_training_state, perturb_pixels
from ood_flow.train.loop import negative_objective, split_validation


def _images(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, 8, 8, generator=g) < 0.3
    return (base * 200 + torch.randint(0, 40, (n, 1, 8, 8), generator=g)).to(torch.uint8)


def _flow(seed=0):
    torch.manual_seed(seed)
    return ood_flow.create_flow("realnvp", (1, 8, 8), channels=8, blocks=1, scales=2)


def _cfg(**kw):
    base = dict(epochs=2, batch_size=16, lr=1e-3, weight_decay=0.0, optimizer="adam", val_fraction=0.25)
    return TrainConfig(**{**base, **kw})


def test_training_lowers_validation_bits_per_dim(tmp_path):
    flow, x = _flow(), _images()
    trainer = Trainer(flow, x, _cfg(epochs=4), tmp_path / "m.pt")
    before = trainer.validate()
    result = trainer.run()
    assert result.last["val_bpd"] < before - 0.3
    assert (tmp_path / "m.pt").exists() and checkpoint_path(tmp_path / "m.pt").exists()
    loaded, extra = ood_flow.load_checkpoint(tmp_path / "m.pt")
    assert extra["steps"] == result.steps == 2 * (72 // 16) * 2


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path):
    x = _images()
    full = Trainer(_flow(), x, _cfg(epochs=3), tmp_path / "full.pt").run()
    part = Trainer(_flow(), x, _cfg(epochs=3, max_steps=7), tmp_path / "part.pt").run()
    assert part.steps == 7
    flow, extra = load_training_state(checkpoint_path(tmp_path / "part.pt"), "cpu")
    cfg = TrainConfig(**{**extra["train_config"], "max_steps": None})
    resumed = Trainer(flow, x, cfg, tmp_path / "part.pt")
    resumed.restore(extra)
    result = resumed.run()
    assert result.steps == full.steps
    a, b = full.flow.state_dict(), result.flow.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"


def test_interrupt_saves_a_checkpoint_that_resumes(tmp_path):
    x, calls = _images(), {"n": 0}

    def on_step(step, metrics):
        calls["n"] += 1
        if step == 5:
            raise KeyboardInterrupt

    result = Trainer(_flow(), x, _cfg(), tmp_path / "m.pt", events=TrainEvents(on_step=on_step)).run()
    assert result.interrupted and result.steps == 5
    _, extra = load_training_state(checkpoint_path(tmp_path / "m.pt"), "cpu")
    assert extra["position"]["step"] == 5


def test_non_finite_losses_are_skipped_then_rolled_back(tmp_path):
    flow, x, messages = _flow(), _images(), []
    trainer = Trainer(flow, x, _cfg(epochs=1, max_bad_steps=2), tmp_path / "m.pt",
                      events=TrainEvents(on_message=messages.append))
    good = {k: v.clone() for k, v in flow.state_dict().items()}
    original = trainer._loss
    trainer._loss = lambda idx, step: (torch.tensor(float("nan"), requires_grad=True), {})
    assert trainer._step(torch.arange(16)) is None
    assert trainer._step(torch.arange(16)) is None
    assert any("rolled back" in m for m in messages)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)
    assert all(torch.equal(good[k], flow.state_dict()[k]) for k in good), "a NaN step reached the weights"
    trainer._loss = original
    assert trainer._step(torch.arange(16)) is not None


def test_negative_term_only_counts_samples_above_the_threshold():
    ll, neg = torch.tensor([-10.0, -20.0]), torch.tensor([-5.0, -50.0, -100.0, -7.0])
    loss, kept = negative_objective(ll, neg, -1e9)
    assert torch.allclose(loss, 0.5 * (15.0 + neg.mean())) and kept.all()
    loss, kept = negative_objective(ll, neg, -30.0)
    assert loss.item() == pytest.approx(4.5) and kept.tolist() == [True, False, False, True]
    loss, kept = negative_objective(ll, neg, 1e9)  # none above C: the plain NLL, as in the authors' code
    assert loss.item() == 15.0 and not kept.any()


def test_perturb_replaces_pixels_at_the_given_rate():
    x = torch.zeros(200, 1, 16, 16, dtype=torch.uint8)
    y = perturb_pixels(x, 0.2, torch.Generator().manual_seed(0))
    changed = (y != x).float().mean().item()
    assert abs(changed - 0.2 * 255 / 256) < 0.01


def test_validation_split_is_deterministic_and_disjoint():
    a_train, a_val = split_validation(1000, 0.05, seed=3)
    b_train, b_val = split_validation(1000, 0.05, seed=3)
    assert torch.equal(a_val, b_val) and len(a_val) == 50
    assert not set(a_train.tolist()) & set(a_val.tolist())
    assert len(split_validation(10, 0.5, 0)[1]) == 0


def test_paper_defaults_per_family():
    assert TrainConfig().resolved("realnvp").optimizer == "adam"
    assert TrainConfig().resolved("glow").optimizer == "rmsprop"
    tab = TrainConfig().resolved("tabular")
    assert (tab.optimizer, tab.weight_decay) == ("adamw", 1e-3)
    with pytest.raises(ValueError, match="unknown optimizer"):
        TrainConfig(optimizer="sgd").resolved("realnvp")
    assert math.isclose(TrainConfig().resolved("realnvp").lr, 5e-5)
