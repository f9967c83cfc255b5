"""Per-sample OOD scores from trained flows (higher = more in-distribution)."""

from ood_flow.score.likelihood import sample_keys, score_likelihood

__all__ = ["sample_keys", "score_likelihood"]
