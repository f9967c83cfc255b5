"""Training flows by maximum likelihood (with negative training and perturbed inputs as options)."""

from ood_flow.train.checkpoint import checkpoint_path, load_training_state
from ood_flow.train.config import OPTIMIZERS, PAPER_DEFAULTS, TrainConfig
from ood_flow.train.loop import Trainer, TrainEvents, TrainResult, perturb_pixels, split_validation

__all__ = ["OPTIMIZERS", "PAPER_DEFAULTS", "TrainConfig", "Trainer", "TrainEvents", "TrainResult", "checkpoint_path",
           "load_training_state", "perturb_pixels", "split_validation"]
