"""NaN and infinity injected at seeded random steps of training: nothing non-finite is ever saved.

Each case poisons one part of a step (the loss, a gradient, a weight after the update, a batch-norm
statistic) once, for a burst, or for good, at a step drawn from its seed. Every file the run saves
must load (loading refuses non-finite weights); a transient fault must be survived, a permanent
one must end in TrainingDiverged with the last good model kept.
"""

from __future__ import annotations

import random

import pytest
import torch

import ood_flow
from ood_flow.train import TrainConfig, Trainer, TrainEvents, TrainingDiverged, checkpoint_path

KINDS = ("loss", "loss-burst", "gradient", "weights", "batchnorm", "forever")


def _images(n=96):
    g = torch.Generator().manual_seed(0)
    return ((torch.rand(n, 1, 8, 8, generator=g) < 0.3) * 200 + torch.randint(0, 40, (n, 1, 8, 8), generator=g)
            ).to(torch.uint8)


def _trainer(path, messages):
    torch.manual_seed(0)
    flow = ood_flow.create_flow("realnvp", (1, 8, 8), channels=4, blocks=1)
    cfg = TrainConfig(epochs=3, batch_size=16, lr=1e-3, weight_decay=0.0, optimizer="adam", val_fraction=0.25,
                      max_rollbacks=2)
    return Trainer(flow, _images(), cfg, path, events=TrainEvents(on_message=messages.append))


def _poison(trainer, kind: str, at: int) -> None:
    """Make step ``at`` (and later ones, for the bursts) produce non-finite numbers of the given kind."""
    forward, step = trainer.flow.log_prob, trainer.optimizer.step
    bad = {"loss": {at}, "loss-burst": set(range(at, at + 3)), "forever": set(range(at, 10**6))}.get(kind, {at})
    now = lambda: trainer.position["step"]  # noqa: E731

    def poisoned_forward(x):
        ll = forward(x)
        if now() in bad and kind in ("loss", "loss-burst", "forever"):
            return ll * float("nan")
        if now() in bad and kind == "gradient":
            ll.register_hook(lambda g: g * float("inf"))
        return ll

    def poisoned_step(*args, **kwargs):
        step(*args, **kwargs)
        with torch.no_grad():
            if now() in bad and kind == "weights":
                next(trainer.flow.parameters()).view(-1)[0] = float("inf")
            if now() in bad and kind == "batchnorm":  # as a batch whose statistics overflowed would leave them
                next(m for m in trainer.flow.modules() if isinstance(m, torch.nn.BatchNorm2d)).running_var[0] = \
                    float("nan")

    trainer.flow.log_prob, trainer.optimizer.step = poisoned_forward, poisoned_step


def _inject(tmp_path, kind: str, seed: int) -> None:
    at = random.Random(f"{kind}-{seed}").randrange(0, 3 if kind == "forever" else 12)  # 'forever' needs 9 steps
    what = f"{kind} at step {at} (seed {seed})"
    messages, saved = [], []
    trainer = _trainer(tmp_path / "m.pt", messages)
    _poison(trainer, kind, at)
    save = trainer.save

    def checked_save():
        save()
        saved.append(trainer.position["step"])
        for path in (tmp_path / "m.pt", checkpoint_path(tmp_path / "m.pt")):
            ood_flow.load_checkpoint(path)  # raises on a non-finite weight or statistic

    trainer.save = checked_save
    if kind == "forever":
        with pytest.raises(TrainingDiverged, match="kept the last finite model"):
            trainer.run()
    else:
        result = trainer.run()
        assert result.steps == trainer.total_steps() and not result.interrupted, what
    assert saved, what
    assert any("non-finite" in m for m in messages), f"{what}: the fault went unnoticed: {messages}"
    model = ood_flow.load_model(tmp_path / "m.pt")
    assert all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point()), what


@pytest.mark.parametrize("kind", KINDS)
def test_an_injected_fault_is_never_saved(tmp_path, kind):
    _inject(tmp_path, kind, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 11))
@pytest.mark.parametrize("kind", KINDS)
def test_faults_at_random_steps_are_never_saved(tmp_path, kind, seed):
    _inject(tmp_path, kind, seed)
