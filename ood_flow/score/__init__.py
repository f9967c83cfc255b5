"""Per-sample OOD scores from trained flows (higher = more in-distribution), and thresholds on them.

:func:`score_source` scores a SOURCE with any of the :data:`METHODS` and writes a score group.
"""

from ood_flow.score.combine import likelihood_ratio, waic
from ood_flow.score.complexity import COMPRESSORS, compressed_bits, complexity
from ood_flow.score.calibration import Calibration, Settings
from ood_flow.score.evidence import Decision, benjamini_hochberg, conformal_p_values, decide
from ood_flow.score.gate import Gate, GateSpec, fit_gate, ood_fraction, parse_reference
from ood_flow.score.likelihood import sample_keys, score_likelihood
from ood_flow.score.methods import METHODS, SCORES
from ood_flow.score.run import ScoreResult, score_source
from ood_flow.score.threshold import threshold_at_tpr

__all__ = ["COMPRESSORS", "METHODS", "SCORES", "Calibration", "Decision", "Gate", "GateSpec", "ScoreResult",
           "Settings", "benjamini_hochberg", "compressed_bits", "complexity", "conformal_p_values", "decide",
           "fit_gate", "likelihood_ratio", "ood_fraction", "parse_reference", "sample_keys", "score_likelihood",
           "score_source", "threshold_at_tpr", "waic"]
