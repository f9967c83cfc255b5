"""The typicality test: is a batch of inputs in the model's typical set?

A flow can give OOD data a *higher* likelihood than its own training data (the
paper's FashionMNIST -> MNIST failure), yet such data is not *typical*: a batch
of ``M`` in-distribution samples has mean negative log-likelihood close to the
model's entropy ``H``, whereas OOD data sits far from ``H`` on either side. The
statistic of a batch is ``|-mean(log p(batch)) - H|``, larger = more OOD, with
``H`` estimated as ``-mean(log p)`` over a reference set.

For an honest estimate the reference must be distinct from the in-distribution
data being evaluated (e.g. reference = the training split, in-distribution =
the test split): with the same data the in-distribution batches are centred on
``H`` by construction and the test looks better than it is. Passing the same
array is allowed, for a quick look.

References:
    Nalisnick, Matsukawa, Teh & Lakshminarayanan, "Detecting Out-of-Distribution
    Inputs to Deep Generative Models Using Typicality" (2019), arXiv:1906.02994.
"""

from __future__ import annotations

import numpy as np

from ood_flow.errors import InputError
from ood_flow.evaluate.metrics import ood_metrics
from ood_flow.score.threshold import checked_scores


def entropy_estimate(reference_ll, *, name: str = "reference") -> float:
    """``H ≈ -mean(log p)`` over the reference log-likelihoods (nats)."""
    ref = checked_scores(reference_ll, name)
    if not np.isfinite(ref).all():
        raise InputError(f"{name}: {int((~np.isfinite(ref)).sum())} of {len(ref)} log-likelihoods are "
                         "infinite; the entropy estimate needs finite values")
    return float(-ref.mean())


def typicality_batches(reference_ll, group_ll, batch_size: int, *, n_batches: int = 1000, seed: int = 0,
                       name: str = "group") -> np.ndarray:
    """The typicality statistic of ``n_batches`` random batches of ``group_ll``.

    Each batch draws ``batch_size`` samples with replacement from ``group_ll``
    (so ``batch_size`` may exceed the group size). A batch containing a ``-inf``
    log-likelihood gets the statistic ``inf`` (maximally atypical).

    Args:
        reference_ll: log-likelihoods (nats) of in-distribution reference data, for ``H``.
        group_ll: log-likelihoods (nats) of the data to test.
        batch_size: ``M``, the number of samples per batch (1 = a per-sample test).
        n_batches: how many random batches.
        seed: seed of the batch sampling.

    Returns:
        float64 array (n_batches,) of ``|-mean(batch log p) - H|``.
    """
    _check_sizes(batch_size, n_batches)
    entropy = entropy_estimate(reference_ll)
    ll = checked_scores(group_ll, name)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(ll), size=(n_batches, batch_size))
    return np.abs(-ll[index].mean(axis=1) - entropy)


def typicality_auroc(reference_ll, in_ll, ood_ll, batch_size: int, *, n_batches: int = 1000, seed: int = 0,
                     tpr: float = 0.95, in_name: str = "in-distribution",
                     ood_name: str = "out-of-distribution") -> dict:
    """Batch-level detection metrics of the typicality test.

    In-distribution batches are the positive class and the decision score is
    ``-statistic`` (higher = more typical), so the keys are those of
    :func:`ood_metrics` computed over batches: ``n_in`` and ``n_ood`` count batches,
    and ``threshold`` is in units of ``-statistic``. Added keys: ``batch_size``,
    ``n_batches``, ``entropy`` (the estimate of ``H``, nats), ``n_reference``,
    ``statistic_threshold`` (= ``-threshold``: batches whose statistic exceeds it are OOD).

    The in-distribution and OOD batches use independent streams spawned from ``seed``.
    """
    _check_sizes(batch_size, n_batches)
    seed_in, seed_ood = np.random.SeedSequence(seed).spawn(2)
    stat_in = typicality_batches(reference_ll, in_ll, batch_size, n_batches=n_batches, seed=seed_in, name=in_name)
    stat_ood = typicality_batches(reference_ll, ood_ll, batch_size, n_batches=n_batches, seed=seed_ood, name=ood_name)
    result = ood_metrics(-stat_in, -stat_ood, tpr=tpr, in_name=in_name, ood_name=ood_name)
    result.update(
        batch_size=int(batch_size),
        n_batches=int(n_batches),
        entropy=entropy_estimate(reference_ll),
        n_reference=len(np.asarray(reference_ll).reshape(-1)),
        statistic_threshold=-result["threshold"],
    )
    return result


def _check_sizes(batch_size: int, n_batches: int) -> None:
    if int(batch_size) < 1 or int(n_batches) < 1:
        raise ValueError(f"batch_size and n_batches must be >= 1, got {batch_size} and {n_batches}")
