"""Evaluation: detection metrics from scores (in-distribution is the positive class).

:func:`evaluate_groups` evaluates the groups of a score file (``oodflow evaluate``).
"""

from ood_flow.evaluate.bootstrap import bootstrap_intervals
from ood_flow.evaluate.metrics import ood_metrics
from ood_flow.evaluate.run import Bootstrap, Evaluation, Typicality, evaluate_groups
from ood_flow.evaluate.typicality import entropy_estimate, typicality_auroc, typicality_batches
from ood_flow.score.threshold import threshold_at_tpr

__all__ = ["Bootstrap", "Evaluation", "Typicality", "bootstrap_intervals", "entropy_estimate", "evaluate_groups",
           "ood_metrics", "threshold_at_tpr", "typicality_auroc", "typicality_batches"]
