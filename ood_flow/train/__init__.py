"""Training flows by maximum likelihood (with negative training and perturbed inputs as options).

:func:`train_flow` trains a flow on a SOURCE and writes the model file.
"""

from ood_flow.train.checkpoint import checkpoint_path, load_training_state
from ood_flow.train.config import OPTIMIZERS, PAPER_DEFAULTS, FeatureSpec, TrainConfig
from ood_flow.train.guard import TrainingDiverged
from ood_flow.train.loop import Trainer
from ood_flow.train.presets import PRESETS, get_preset
from ood_flow.train.result import TrainEvents, TrainResult
from ood_flow.train.objective import negative_objective, perturb_pixels, split_holdout
from ood_flow.train.run import train_flow
from ood_flow.train.stop import StopRequest

__all__ = ["OPTIMIZERS", "PAPER_DEFAULTS", "PRESETS", "FeatureSpec", "StopRequest", "TrainConfig", "Trainer",
           "TrainEvents", "TrainResult", "TrainingDiverged", "checkpoint_path", "get_preset", "load_training_state",
           "negative_objective", "perturb_pixels",
           "split_holdout", "train_flow"]
