"""The training loop: learning, exact resume, non-finite losses, negative training term."""

from __future__ import annotations

import math
import random
import re

import pytest
import torch

import ood_flow
from ood_flow.errors import ModelFileError, UsageError
from ood_flow.train import (TrainConfig, Trainer, TrainEvents, TrainingDiverged, checkpoint_path, load_training_state,
                            negative_objective, perturb_pixels, split_holdout)


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


@pytest.mark.parametrize("optimizer, weight_decay", [("adam", 5e-5), ("rmsprop", 5e-5), ("adamw", 1e-3)])
def test_multi_tensor_updates_train_to_the_bits_of_torchs_default_one_tensor_at_a_time(tmp_path, monkeypatch,
                                                                                        optimizer, weight_decay):
    """The trainer's optimiser runs torch's multi-tensor updates (fewer calls); a trained model must be the one
    the default implementation gives, bit for bit, or the speed would have changed every model trained."""
    import ood_flow.train.loop as loop

    x, cfg = _images(), _cfg(optimizer=optimizer, weight_decay=weight_decay)
    fast = Trainer(_flow(), x, cfg, tmp_path / "fast.pt")
    assert all(group["foreach"] for group in fast.optimizer.param_groups)
    fast = fast.run()
    default = {name: lambda params, cls=cls, **kw: cls(params, **{k: v for k, v in kw.items() if k != "foreach"})
               for name, cls in loop.OPTIMIZERS.items()}
    monkeypatch.setattr(loop, "OPTIMIZERS", default)
    plain = Trainer(_flow(), x, cfg, tmp_path / "plain.pt")
    assert not any(group["foreach"] for group in plain.optimizer.param_groups)
    plain = plain.run()
    a, b = fast.flow.state_dict(), plain.flow.state_dict()
    assert fast.steps == plain.steps > 0 and all(torch.equal(a[k], b[k]) for k in a)


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
    y = perturb_pixels(x, 0.2, torch.arange(200), seed=0)
    changed = (y != x).float().mean().item()
    assert abs(changed - 0.2 * 255 / 256) < 0.01


def test_validation_split_is_deterministic_and_disjoint():
    a_train, a_val, a_cal = split_holdout(1000, 0.05, 0.05, seed=3)
    b_train, b_val, b_cal = split_holdout(1000, 0.05, 0.05, seed=3)
    assert torch.equal(a_val, b_val) and torch.equal(a_cal, b_cal) and len(a_val) == 50
    assert not set(a_train.tolist()) & set(a_val.tolist())
    assert len(split_holdout(10, 0.5, 0.0, 0)[1]) == 0


def test_paper_defaults_per_family():
    assert TrainConfig().resolved("realnvp").optimizer == "adam"
    assert TrainConfig().resolved("glow").optimizer == "rmsprop"
    tab = TrainConfig().resolved("tabular")
    assert (tab.optimizer, tab.weight_decay) == ("adamw", 1e-3)
    with pytest.raises(ValueError, match="unknown optimizer"):
        TrainConfig(optimizer="sgd").resolved("realnvp")
    assert math.isclose(TrainConfig().resolved("realnvp").lr, 5e-5)


# ---------------------------------------------------------------- exact resume, NaN guard, ranges


def _resumed(path, x, **changes):
    """Continue the run whose checkpoint is beside ``path`` to the end of its configuration."""
    flow, extra = load_training_state(checkpoint_path(path), "cpu")
    cfg = TrainConfig(**{**extra["train_config"], **changes})
    trainer = Trainer(flow, x, cfg, path)
    trainer.restore(extra)
    return trainer.run()


def _same_state(a, b) -> bool:
    a, b = a.state_dict(), b.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    x = _images()
    return x, Trainer(_flow(), x, _cfg(), tmp_path_factory.mktemp("full") / "full.pt").run()


@pytest.mark.parametrize("seed", [1, 2])
def test_a_stop_request_saves_the_completed_step_and_resume_is_exact(tmp_path, uninterrupted, seed):
    x, full = uninterrupted
    at = random.Random(seed).randrange(1, full.steps)
    trainer = Trainer(_flow(), x, _cfg(), tmp_path / "m.pt")
    trainer.events.on_step = lambda step, m: trainer.stop.request("SIGTERM") if step == at else None
    stopped = trainer.run()
    assert stopped.interrupted and stopped.signal == "SIGTERM" and stopped.steps == at, f"seed {seed}"
    resumed = _resumed(tmp_path / "m.pt", x)
    assert resumed.steps == full.steps and _same_state(resumed.flow, full.flow), f"seed {seed}: stopped at {at}"
    assert [h["train_bpd"] for h in resumed.history] == [h["train_bpd"] for h in full.history]


def test_an_interrupt_inside_a_step_leaves_no_trace_in_batch_norm_statistics(tmp_path, uninterrupted):
    """The bug of issue 12: a Ctrl-C during the forward pass had already moved the running statistics."""
    x, full = uninterrupted
    trainer = Trainer(_flow(), x, _cfg(), tmp_path / "m.pt")
    forward = trainer.flow.log_prob

    def interrupted_forward(batch):
        out = forward(batch)  # batch norm has updated its running statistics by now
        if trainer.position["step"] == 3:
            raise KeyboardInterrupt
        return out

    trainer.flow.log_prob = interrupted_forward
    stopped = trainer.run()
    assert stopped.interrupted and stopped.steps == 3
    del trainer.flow.log_prob
    assert _same_state(_resumed(tmp_path / "m.pt", x).flow, full.flow)


def test_non_finite_weights_after_a_step_are_rolled_back_and_never_saved(tmp_path):
    x, messages, saved = _images(), [], []
    trainer = Trainer(_flow(), x, _cfg(), tmp_path / "m.pt", events=TrainEvents(on_message=messages.append))
    real_step, real_save = trainer.optimizer.step, trainer.save

    def poisoned_step(*args, **kwargs):
        real_step(*args, **kwargs)
        if trainer.position["step"] == 2:
            next(trainer.flow.parameters()).data.view(-1)[0] = float("nan")

    def checked_save():
        real_save()
        saved.append(ood_flow.load_model(tmp_path / "m.pt"))  # load refuses non-finite weights

    trainer.optimizer.step, trainer.save = poisoned_step, checked_save
    result = trainer.run()
    assert any("non-finite weights" in m and "rolled back" in m for m in messages)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)
    assert saved and not result.interrupted
    assert all(torch.isfinite(t).all() for t in result.flow.state_dict().values() if t.is_floating_point())


def test_a_skipped_step_puts_back_the_batch_norm_statistics(tmp_path):
    x = _images()
    trainer = Trainer(_flow(), x, _cfg(), tmp_path / "m.pt")
    before = {k: v.clone() for k, v in trainer.flow.state_dict().items()}
    forward = trainer.flow.log_prob
    trainer.flow.log_prob = lambda batch: forward(batch) * float("nan")
    assert trainer._step(torch.arange(16)) is None
    after = trainer.flow.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a skipped step changed the model"
    assert trainer.position["step"] == 1 and trainer.guard.bad_steps == 1


def test_training_that_keeps_diverging_gives_up_keeping_the_last_finite_model(tmp_path):
    x = _images()
    trainer = Trainer(_flow(), x, _cfg(epochs=6, lr=1e30, max_rollbacks=2), tmp_path / "m.pt")
    expected = r"kept the last finite model \(step \d+\) in .*m\.pt; try a smaller --lr"
    try:
        result = trainer.run()
    except TrainingDiverged as exc:
        message = str(exc)
    else:  # one loaded full run once saw this; say what the run returned (a stray signal stops it cleanly)
        pytest.fail(f"did not give up: {result.steps} steps, interrupted by {result.signal}, "
                    f"{trainer.guard.rollbacks} roll-backs, history {result.history}")
    assert re.search(expected, message), message
    kept = int(message.split("(step ")[1].split(")")[0])
    assert kept < trainer.total_steps() and trainer.guard.rollbacks == 2
    model, extra = ood_flow.load_checkpoint(tmp_path / "m.pt")  # loading checks that every weight is finite
    assert extra["steps"] == kept and _same_state(model, trainer.flow.eval())
    assert load_training_state(checkpoint_path(tmp_path / "m.pt"), "cpu")[1]["position"]["step"] == kept


def test_a_model_with_non_finite_weights_is_refused_on_save_and_on_load(tmp_path):
    flow = _flow()
    with torch.no_grad():
        next(flow.parameters()).view(-1)[0] = float("inf")
    with pytest.raises(ValueError, match="not finite"):
        ood_flow.save_model(flow, tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()
    record = {**ood_flow.flows.io.header(flow), "state_dict": flow.state_dict(), "extra": {}}
    torch.save(record, tmp_path / "m.pt")  # as a diverged run of an older oodflow could have left it
    with pytest.raises(ModelFileError, match=r"m\.pt: the model's weights are not finite"):
        ood_flow.load_model(tmp_path / "m.pt")


def test_a_fresh_run_never_replaces_a_model_or_checkpoint(tmp_path):
    x = _images()
    Trainer(_flow(), x, _cfg(epochs=1), tmp_path / "m.pt").run()
    before = (tmp_path / "m.pt").read_bytes()
    with pytest.raises(FileExistsError, match="exists; pass resume=True to continue training it or overwrite=True"):
        Trainer(_flow(1), x, _cfg(epochs=1), tmp_path / "m.pt").run()
    assert (tmp_path / "m.pt").read_bytes() == before
    Trainer(_flow(1), x, _cfg(epochs=1), tmp_path / "m.pt", overwrite=True).run()
    assert (tmp_path / "m.pt").read_bytes() != before


@pytest.mark.parametrize("field, value", [
    ("lr", float("nan")), ("lr", float("inf")), ("lr", 0.0), ("lr", -1e-3), ("clip", 0.0), ("clip", float("nan")),
    ("weight_decay", -1e-5), ("weight_decay", float("inf")), ("val_fraction", 1.0), ("val_fraction", -0.1),
    ("perturb", 1.5), ("perturb", float("nan")), ("negative_threshold", float("-inf")), ("epochs", 0),
    ("batch_size", 0), ("max_steps", 0), ("seed", -1), ("seed", 2**32),
])
def test_out_of_range_settings_are_usage_errors_naming_the_option(field, value):
    with pytest.raises(UsageError, match=f"--{field.replace('_', '-')} must be") as info:
        _cfg(**{field: value}).validate()
    assert info.value.exit_code == 2


def test_legitimate_zeros_and_negatives_are_accepted():
    _cfg(seed=0, weight_decay=0.0, negative_threshold=-30000.0, perturb=0.0, val_fraction=0.0).validate()


def test_early_stopping_stops_when_validation_stops_improving(tmp_path):
    x = _images()
    # min_delta far above any real gain: the second epoch cannot count as an improvement
    result = Trainer(_flow(), x, _cfg(epochs=6, patience=1, min_delta=10.0), tmp_path / "m.pt").run()
    assert result.stopped_early and len(result.history) == 2 and result.steps == 2 * (72 // 16)
    _, extra = ood_flow.load_checkpoint(tmp_path / "m.pt")
    assert extra["stopped_early"] is True and extra["best_epoch"] == 1
    assert result.best_epoch == 1 and result.best_val_bpd == result.history[0]["val_bpd"]
    full = Trainer(_flow(), x, _cfg(epochs=3, patience=None), tmp_path / "f.pt").run()
    assert not full.stopped_early and len(full.history) == 3 and full.best_epoch is None


def test_early_stopping_counts_only_misses_since_the_best():
    from ood_flow.train.config import no_improvement

    assert no_improvement([3.0, 2.0, 1.999, 1.9], 0.005) == 0
    assert no_improvement([3.0, 2.0, 1.999, 2.1, 1.998], 0.005) == 3
    assert no_improvement([], 0.005) == 0


@pytest.mark.slow
def test_compiled_training_follows_the_eager_run_to_rounding(tmp_path):
    """--compile changes how the step runs, not what it computes. After one step the weights agree to float
    rounding (compiled kernels sum in another order); after four, Adam's normalised update has amplified
    those last bits in parameters whose gradient is near zero (by up to about the learning rate), while the
    validation bits/dim still agrees to 1e-3."""
    x = _images()
    for steps in (1, 4):
        eager = Trainer(_flow(), x, _cfg(epochs=1, max_steps=steps), tmp_path / f"e{steps}.pt").run()
        compiled = Trainer(_flow(), x, _cfg(epochs=1, max_steps=steps, compile=True), tmp_path / f"c{steps}.pt").run()
        assert compiled.steps == eager.steps == steps
        assert abs(compiled.history[-1]["val_bpd"] - eager.history[-1]["val_bpd"]) < 1e-3
    a = Trainer(_flow(), x, _cfg(epochs=1, max_steps=1), tmp_path / "e1b.pt").run().flow.state_dict()
    b = ood_flow.load_model(tmp_path / "c1.pt").state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-4, atol=1e-5) for k in a)
    assert torch.load(tmp_path / "c4.pt", weights_only=True)["extra"]["train_config"]["compile"] is True


def test_a_run_cut_off_mid_epoch_resumes_with_its_best_epoch_and_patience_count(tmp_path):
    x = _images()
    steps = 72 // 16  # per epoch
    # cut in the middle of epoch 3, after epoch 1 set the best (min_delta: no later epoch counts as better)
    cfg = _cfg(epochs=8, patience=3, min_delta=10.0)
    Trainer(_flow(), x, TrainConfig(**{**cfg.__dict__, "max_steps": 2 * steps + 2}), tmp_path / "m.pt").run()
    flow, extra = load_training_state(checkpoint_path(tmp_path / "m.pt"), "cpu")
    assert extra["best"]["epoch"] == 1
    resumed = Trainer(flow, x, cfg, tmp_path / "m.pt")
    resumed.restore(extra)
    result = resumed.run()
    # stops after epoch 4, three epochs after the best, as an uncut run does (the history also keeps
    # the cut-off part of epoch 3, marked incomplete)
    complete = [h["epoch"] for h in result.history if h["complete"]]
    assert result.stopped_early and complete == [1, 2, 3, 4] and result.best_epoch == 1
    uncut = Trainer(_flow(), x, cfg, tmp_path / "u.pt").run()
    assert [h["epoch"] for h in uncut.history] == [1, 2, 3, 4] and uncut.best_epoch == 1
