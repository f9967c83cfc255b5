"""What ``--resume`` may change: the same command plus ``--resume`` always works.

An option equal to the saved value is fine. A different value is applied when training can
continue exactly with it (how long to train, the learning rate, weight decay, clipping, the
negative-training threshold, the batch size at an epoch boundary) and reported; otherwise it is
refused with a usage error that names the option and the saved value (the architecture, the
optimiser, the seed and the validation and calibration splits it fixes, the perturbation of the inputs, the noise
added to vectors). How long to train may grow, or stay at the point reached, but not fall below it: the weights
of an earlier step are gone, so ``--max-steps`` below the step reached (or ``--epochs`` below the epochs
completed) is refused naming that step (or epoch).
"""

from __future__ import annotations

import dataclasses

from ood_flow.errors import UsageError
from ood_flow.train.config import TrainConfig

# settings a checkpoint fixes, with the reason shown when a resumed run asks for another value
FIXED = {
    "optimizer": "the optimiser's saved state belongs to it",
    "seed": "it fixed the initial weights, the validation split and every random draw",
    "val_fraction": "it fixed the validation split",
    "cal_fraction": "it fixed the calibration split",
    "perturb": "it is part of what the model learns",
    "noise": "it is part of what the model learns",
}
OPTIMIZER_SETTINGS = ("lr", "weight_decay")  # applied to the optimiser itself, not only to the configuration


def option(name: str) -> str:
    """A configuration field as the command line spells it: ``val_fraction`` -> ``--val-fraction``."""
    return "--calibration-fraction" if name == "cal_fraction" else "--" + name.replace("_", "-")


def plan_resume(saved: TrainConfig, requested: TrainConfig, position: dict) -> tuple[TrainConfig, list[str]]:
    """The configuration a resumed run continues with, and each change in words.

    Args:
        saved: the checkpoint's configuration.
        requested: what the user asked for now; ``None`` fields keep the saved value.
        position: the checkpoint's position (``epoch``, ``batch``, ``step``).

    Raises:
        UsageError: a setting the checkpoint fixes was given a different value.
    """
    updates, changes = {}, []
    for field in dataclasses.fields(TrainConfig):
        new, old = getattr(requested, field.name), getattr(saved, field.name)
        if new is None or new == old:
            continue
        if field.name in FIXED:
            raise UsageError(f"--resume: {option(field.name)} cannot change ({FIXED[field.name]}); the checkpoint "
                             f"has {option(field.name)} {old}: drop the option or give that value")
        _check_not_passed(field.name, new, position)
        if field.name == "batch_size" and position.get("batch", 0):
            raise UsageError(f"--resume: --batch-size can change only between epochs; the checkpoint stopped inside "
                             f"epoch {position['epoch'] + 1} with --batch-size {old}: resume with that value, then "
                             "change it")
        updates[field.name] = new
        changes.append(f"{option(field.name)} {old} -> {new}")
    cfg = dataclasses.replace(saved, **updates)
    cfg.validate()
    return cfg, changes


def _check_not_passed(name: str, new, position: dict) -> None:
    """Refuse a target the checkpoint has already passed: its weights of that point are gone."""
    step, epoch, inside = position.get("step", 0), position.get("epoch", 0), position.get("batch", 0) > 0
    if name == "max_steps" and new < step:
        raise UsageError(f"--resume: --max-steps {new} is below the step the checkpoint has reached ({step}); "
                         f"training cannot go back: give --max-steps {step} or more, or drop it")
    if name == "epochs" and (new < epoch or (new == epoch and inside)):
        where = f"{epoch} epoch{'' if epoch == 1 else 's'} completed" + (f" and step {step} inside epoch {epoch + 1}"
                                                                          if inside else "")
        raise UsageError(f"--resume: --epochs {new} is below the point the checkpoint has reached ({where}); "
                         f"training cannot go back: give --epochs {epoch + 1 if inside else epoch} or more, or "
                         "drop it")


def check_architecture(model: str, saved: dict, given: dict, saved_model: str) -> None:
    """Refuse architecture options (``--channels`` ...) that differ from the checkpoint's model.

    Args:
        model: the ``--model`` asked for (None: not given).
        saved: the checkpoint's architecture options (``config_dict`` of its flow).
        given: the architecture options given now (None values left out).
        saved_model: the checkpoint's model family.
    """
    if model is not None and model != saved_model:
        raise UsageError(f"--resume: the checkpoint holds a {saved_model} model, not {model}: drop --model or give "
                         f"--model {saved_model}")
    for name, value in given.items():
        if name not in saved:
            raise UsageError(f"--resume: {option(name)} does not apply to the checkpoint's {saved_model} model")
        if value != saved[name]:
            raise UsageError(f"--resume: the architecture cannot change; the checkpoint has {option(name)} "
                             f"{saved[name]}, not {value}: drop the option or give that value")
