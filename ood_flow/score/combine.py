"""Scores that combine the log-likelihoods of several flows on the same inputs.

Every model is evaluated with the same dequantization noise (a function of seed and sample id), so
the differences below compare the models, not the noise. Both scores are in nats and oriented like
the log-likelihood: higher = more in-distribution.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def likelihood_ratio(log_likelihood, background_log_likelihood) -> np.ndarray:
    """``LLR(x) = log p(x) - log p_background(x)``: the likelihood left once background statistics are removed.

    The background model is trained on inputs with a share of pixels replaced by random values
    (``oodflow train --perturb RATE``): it learns the low-level statistics (smoothness, many
    zeros) that dominate the likelihood, and not the semantic content, so the ratio keeps the part
    specific to the in-distribution data.

    References:
        Ren, Liu, Fertig, Snoek, Poplin, DePristo, Dillon & Lakshminarayanan, "Likelihood Ratios for
        Out-of-Distribution Detection", NeurIPS 2019, arXiv:1906.02845.

    Example:
        >>> likelihood_ratio([-10.0, -20.0], [-12.0, -15.0]).tolist()
        [2.0, -5.0]
    """
    ll, bg = np.asarray(log_likelihood, dtype=np.float64), np.asarray(background_log_likelihood, dtype=np.float64)
    if ll.shape != bg.shape:
        raise ValueError(f"likelihood_ratio: {ll.shape[0]} model scores but {bg.shape[0]} background scores")
    return ll - bg


def waic(member_log_likelihoods: Sequence) -> dict[str, np.ndarray]:
    """The Watanabe-Akaike information criterion over an ensemble: ``mean - var`` of the members' log p(x).

    ``var`` is the population variance (``ddof=0``) over the members. Inputs on which independently
    trained flows disagree get a large variance and a low score even when every member likes them.

    Args:
        member_log_likelihoods: one array of per-sample log-likelihoods (nats) per member, at least 2.

    Returns:
        ``waic``, ``waic_mean`` and ``waic_var``, float64 arrays (N,).

    References:
        Choi, Jang & Alemi, "WAIC, but Why? Generative Ensembles for Robust Anomaly Detection" (2018),
        arXiv:1810.01392.

    Example:
        >>> waic([[0.0, -4.0], [-2.0, -4.0]])["waic"].tolist()
        [-2.0, -4.0]
    """
    lls = np.asarray(member_log_likelihoods, dtype=np.float64)
    if lls.ndim != 2 or lls.shape[0] < 2:
        got = lls.shape[0] if lls.ndim else 0
        raise ValueError(f"waic needs the log-likelihoods of at least 2 ensemble members, got {got}")
    mean, var = lls.mean(axis=0), lls.var(axis=0, ddof=0)
    return {"waic": mean - var, "waic_mean": mean, "waic_var": var}
