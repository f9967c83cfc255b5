"""Evaluation: detection metrics from scores (in-distribution is the positive class).

:func:`evaluate_groups` evaluates the groups of a score file (``oodflow evaluate``).
"""

from ood_flow.evaluate.metrics import ood_metrics
from ood_flow.evaluate.run import Evaluation, Typicality, evaluate_groups
from ood_flow.evaluate.typicality import entropy_estimate, typicality_auroc, typicality_batches
from ood_flow.score.threshold import threshold_at_tpr

__all__ = ["Evaluation", "Typicality", "entropy_estimate", "evaluate_groups", "ood_metrics", "threshold_at_tpr",
           "typicality_auroc", "typicality_batches"]
