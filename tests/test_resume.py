"""--resume as a user meets it: the same command plus --resume works; what may change is applied and
said, what may not is refused naming it; no checkpoint yet means from scratch, said."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from cli_helpers import image_npz, one_line_error, run, run_json
from reliability_helpers import fingerprints

import ood_flow
from ood_flow.errors import UsageError
from ood_flow.train import TrainConfig, TrainEvents
from ood_flow.train.resume import check_architecture, plan_resume

ARCH = ("--channels", "4", "--blocks", "1")
TRAIN = (*ARCH, "--lr", "1e-3", "--batch-size", "8", "--seed", "3", "--quiet")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return image_npz(tmp_path_factory.mktemp("resume") / "x.npz", n=48)


def _train(data, out, *extra, code=0):
    return run("train", "--data", data, "--out", out, *TRAIN, *extra, code=code)


def test_the_same_command_plus_resume_continues(data, tmp_path):
    first = run_json("train", "--data", data, "--out", tmp_path / "m.pt", *TRAIN, "--epochs", "1")
    more = run_json("train", "--data", data, "--out", tmp_path / "m.pt", *TRAIN, "--epochs", "2", "--resume")
    assert more["steps"] == 2 * first["steps"]


def test_settings_that_can_change_are_applied_and_said(data, tmp_path):
    _train(data, tmp_path / "m.pt", "--epochs", "1")
    result = run("train", "--data", data, "--out", tmp_path / "m.pt", *ARCH, "--lr", "5e-4", "--batch-size", "12",
                 "--epochs", "2", "--resume")
    assert "applied --epochs 1 -> 2, --batch-size 8 -> 12, --lr 0.001 -> 0.0005" in result.stderr
    _, extra = ood_flow.load_checkpoint(tmp_path / "m.ckpt.pt")
    assert extra["optimizer"]["param_groups"][0]["lr"] == 5e-4 and extra["train_config"]["batch_size"] == 12


@pytest.mark.parametrize("option, value, fragment", [
    ("--seed", "4", "--seed cannot change"), ("--optimizer", "rmsprop", "--optimizer cannot change"),
    ("--val-fraction", "0.2", "--val-fraction cannot change"), ("--channels", "8", "--channels 4, not 8"),
    ("--model", "glow", "holds a realnvp model, not glow"), ("--data", "OTHER", "was trained on --data"),
])
def test_settings_that_cannot_change_are_refused_naming_them(data, tmp_path, option, value, fragment):
    _train(data, tmp_path / "m.pt", "--epochs", "1")
    before = (tmp_path / "m.pt").read_bytes()
    args = ["train", "--data", data, "--out", tmp_path / "m.pt", *TRAIN, "--resume"]
    if option == "--data":
        args[2] = image_npz(tmp_path / "other.npz", n=40, seed=5)
    else:
        args += [option, value]
    one_line_error(run(*args, code=2), fragment)
    assert (tmp_path / "m.pt").read_bytes() == before


def test_resume_without_a_checkpoint_starts_from_scratch_and_says_so(data, tmp_path):
    result = run("train", "--data", data, "--out", tmp_path / "m.pt", *ARCH, "--batch-size", "8", "--epochs", "1",
                 "--resume")
    assert "no checkpoint" in result.stderr and "starting from scratch" in result.stderr
    assert (tmp_path / "m.pt").exists()
    (tmp_path / "m.ckpt.pt").unlink()
    one_line_error(_train(data, tmp_path / "m.pt", "--resume", code=1), "has no checkpoint", "--overwrite")


def test_plan_resume_refuses_a_batch_size_change_inside_an_epoch():
    saved = TrainConfig(epochs=2, batch_size=8, lr=1e-3, weight_decay=0.0, optimizer="adam").resolved("realnvp")
    cfg, changes = plan_resume(saved, TrainConfig(batch_size=16), {"epoch": 1, "batch": 0, "step": 5})
    assert cfg.batch_size == 16 and changes == ["--batch-size 8 -> 16"]
    with pytest.raises(UsageError, match="--batch-size can change only between epochs"):
        plan_resume(saved, TrainConfig(batch_size=16), {"epoch": 1, "batch": 2, "step": 7})
    assert plan_resume(saved, saved, {"epoch": 1, "batch": 2, "step": 7}) == (saved, [])


def test_check_architecture_accepts_equal_values_only():
    saved = {"channels": 4, "blocks": 1, "mask": "checkerboard"}
    check_architecture("realnvp", saved, {"channels": 4, "mask": "checkerboard"}, "realnvp")
    with pytest.raises(UsageError, match="--hidden does not apply"):
        check_architecture(None, saved, {"hidden": 8}, "realnvp")


def test_a_changed_learning_rate_also_reaches_the_roll_back_state(tmp_path):
    from ood_flow.train import Trainer, checkpoint_path, load_training_state

    x = torch.randint(0, 256, (48, 1, 8, 8), dtype=torch.uint8)
    torch.manual_seed(0)
    flow = ood_flow.create_flow("realnvp", (1, 8, 8), channels=4, blocks=1)
    cfg = TrainConfig(epochs=1, max_steps=3, batch_size=8, lr=1e-3, optimizer="adam", weight_decay=0.0)
    Trainer(flow, x, cfg, tmp_path / "m.pt").run()
    flow, extra = load_training_state(checkpoint_path(tmp_path / "m.pt"), "cpu")
    cfg = TrainConfig(**{**extra["train_config"], "lr": 2e-4, "max_steps": None})
    trainer = Trainer(flow, x, cfg, tmp_path / "m.pt")
    trainer.restore(extra)
    assert trainer.optimizer.param_groups[0]["lr"] == 2e-4
    assert trainer.guard.good.optimizer["param_groups"][0]["lr"] == 2e-4


def _interrupted_at(data, out, step: int, epochs: int = 3):
    """The state a Ctrl-C leaves after ``step`` (a real SIGINT, sent from inside the step's callback)."""
    def on_step(done, metrics):
        if done == step:
            os.kill(os.getpid(), signal.SIGINT)

    result = ood_flow.train_flow(str(data), TrainConfig(lr=1e-3, batch_size=8, seed=3, epochs=epochs), out=out,
                                 model_options={"channels": 4, "blocks": 1},
                                 events=TrainEvents(on_step=on_step))
    assert result.interrupted and result.steps == step


def test_a_max_steps_below_the_step_reached_is_refused_and_changes_nothing(data, tmp_path):
    _interrupted_at(data, tmp_path / "m.pt", 9)
    before = fingerprints(tmp_path)
    err = one_line_error(_train(data, tmp_path / "m.pt", "--epochs", "3", "--max-steps", "8", "--resume", code=2),
                         "--max-steps 8", "has reached (9)", "--max-steps 9 or more")
    assert "done" not in err and fingerprints(tmp_path) == before


def test_epochs_below_those_completed_are_refused_naming_the_epoch(data, tmp_path):
    _train(data, tmp_path / "m.pt", "--epochs", "2")
    before = fingerprints(tmp_path)
    one_line_error(_train(data, tmp_path / "m.pt", "--epochs", "1", "--resume", code=2), "--epochs 1",
                   "2 epochs completed")
    assert fingerprints(tmp_path) == before
    with pytest.raises(UsageError, match=r"1 epoch completed and step 9 inside epoch 2"):
        plan_resume(TrainConfig(epochs=3).resolved("realnvp"), TrainConfig(epochs=1), {"epoch": 1, "batch": 3,
                                                                                       "step": 9})


def test_resuming_to_the_step_reached_finishes_as_the_run_that_was_never_stopped(data, tmp_path):
    _interrupted_at(data, tmp_path / "m.pt", 9)
    done = run_json("train", "--data", data, "--out", tmp_path / "m.pt", *TRAIN, "--epochs", "3", "--max-steps", "9",
                    "--resume")
    full = run_json("train", "--data", data, "--out", tmp_path / "full.pt", *TRAIN, "--epochs", "3", "--max-steps",
                    "9")
    assert done["steps"] == full["steps"] == 9 and done["train_bpd"] == full["train_bpd"] is not None
    assert done["val_bpd"] == full["val_bpd"]
    a, b = ood_flow.load_model(tmp_path / "m.pt").state_dict(), ood_flow.load_model(tmp_path / "full.pt").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert ood_flow.load_checkpoint(tmp_path / "m.pt")[1]["train_config"]["max_steps"] == 9
