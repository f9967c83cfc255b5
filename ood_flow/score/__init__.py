"""Per-sample OOD scores from trained flows (higher = more in-distribution), and thresholds on them."""

from ood_flow.score.combine import likelihood_ratio, waic
from ood_flow.score.complexity import COMPRESSORS, compressed_bits, complexity
from ood_flow.score.gate import Gate, fit_gate, ood_fraction, parse_reference
from ood_flow.score.likelihood import sample_keys, score_likelihood

__all__ = ["sample_keys", "score_likelihood", "likelihood_ratio", "waic", "COMPRESSORS", "compressed_bits",
           "complexity", "Gate", "fit_gate", "ood_fraction", "parse_reference"]
