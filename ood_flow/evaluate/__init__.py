"""Evaluation: detection metrics from scores (in-distribution is the positive class)."""

from ood_flow.evaluate.metrics import ood_metrics, threshold_at_tpr
from ood_flow.evaluate.typicality import entropy_estimate, typicality_auroc, typicality_batches

__all__ = ["ood_metrics", "threshold_at_tpr", "entropy_estimate", "typicality_auroc", "typicality_batches"]
