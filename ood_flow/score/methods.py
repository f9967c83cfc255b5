"""The registry of per-sample scores that ``oodflow score --method`` can compute.

Every method returns arrays oriented like the log-likelihood: higher = more in-distribution.
A method gets a :class:`ScoreContext` (the model(s), the data, the options) and returns a dict of
per-sample arrays that are stored as datasets of the score group. Forward passes are shared: the
first model's likelihood is computed once however many methods use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ood_flow import names
from ood_flow.errors import InputError
from ood_flow.flows.models import Flow, has_batchnorm
from ood_flow.score.combine import likelihood_ratio, waic
from ood_flow.score.complexity import compressed_bits, complexity
from ood_flow.score.likelihood import score_likelihood


@dataclass
class ScoreContext:
    """Everything a score method may use.

    Attributes:
        flows: the ``--model`` flows; the first is *the* model, all are ensemble members.
        background: the ``--background-model`` flow, if any.
        options: method options (``compressor``).
        notes: warnings for the user, added by methods (the CLI prints them on stderr).
        attrs: provenance attributes added by methods (stored with the score group).
    """

    flows: list[Flow]
    x: torch.Tensor
    keys: torch.Tensor
    batch_size: int = 256
    dequant_samples: int = 1
    seed: int = 0
    options: dict = field(default_factory=dict)
    progress: Callable[[int], None] | None = None
    background: Flow | None = None
    notes: list[str] = field(default_factory=list)
    attrs: dict = field(default_factory=dict)
    _done: dict = field(default_factory=dict, repr=False)

    @property
    def flow(self) -> Flow:
        return self.flows[0]

    def likelihood(self, flow: Flow | None = None, x: torch.Tensor | None = None, **kwargs) -> dict[str, np.ndarray]:
        return score_likelihood(flow or self.flow, self.x if x is None else x, self.keys, batch_size=self.batch_size,
                                dequant_samples=self.dequant_samples, seed=self.seed, **kwargs)

    def once(self, key: str, flow: Flow, **kwargs) -> dict[str, np.ndarray]:
        """The likelihood parts of ``flow`` under ``key`` (see :func:`passes`), computed on first use."""
        if key not in self._done:
            self._done[key] = self.likelihood(flow, progress=self.progress, **kwargs)
        return self._done[key]

    def note(self, text: str) -> None:
        """Add a warning for the user (once)."""
        if text not in self.notes:
            self.notes.append(text)

    def member(self, i: int = 0) -> dict[str, np.ndarray]:
        return self.once(f"member{i}", self.flows[i])


@dataclass(frozen=True)
class Method:
    """One ``--method``: what it computes and which forward passes it needs.

    Attributes:
        score: the dataset holding the method's score (what ``evaluate --score`` and the gate use).
        passes: the forward passes over the data it needs, as keys of :meth:`ScoreContext.once`,
            given the number of models; methods share passes with equal keys.
        check: raises before any work if the context cannot serve the method.
    """

    name: str
    compute: Callable[[ScoreContext], dict[str, np.ndarray]]
    help: str
    score: str
    passes: Callable[[int], frozenset] = lambda n: frozenset({"member0"})
    check: Callable[[ScoreContext], None] = lambda ctx: None


def _likelihood(ctx: ScoreContext) -> dict[str, np.ndarray]:
    return dict(ctx.member(0))


def _check_complexity(ctx: ScoreContext) -> None:
    if ctx.x.dtype != torch.uint8:
        raise InputError("--method complexity needs 8-bit images: the compressed length of a vector of "
                         "features says nothing about its complexity")


def _complexity(ctx: ScoreContext) -> dict[str, np.ndarray]:
    compressor = ctx.options.get("compressor", "png")
    bits = compressed_bits(ctx.x, compressor)
    ll = ctx.member(0)
    ctx.attrs["compressor"] = compressor
    return {**ll, "complexity": complexity(ll["log_likelihood"], bits), "compressed_bits": bits}


def _check_ratio(ctx: ScoreContext) -> None:
    if ctx.background is None:
        raise InputError("--method likelihood-ratio needs --background-model (a flow trained with "
                         "`oodflow train ... --perturb 0.2`)")


def _ratio(ctx: ScoreContext) -> dict[str, np.ndarray]:
    ll = ctx.member(0)
    bg = ctx.once("background", ctx.background)["log_likelihood"]
    return {**ll, "likelihood_ratio": likelihood_ratio(ll["log_likelihood"], bg), "background_log_likelihood": bg}


def _check_bn(ctx: ScoreContext) -> None:
    if not has_batchnorm(ctx.flow):
        ctx.note("the model has no batch-norm layers: bn_train equals log_likelihood")


def _bn_train(ctx: ScoreContext) -> dict[str, np.ndarray]:
    ctx.attrs["batchnorm"] = (f"train for bn_train (statistics of each scored batch of {ctx.batch_size} consecutive "
                              "samples: depends on batch composition); eval (stored statistics) for the other scores")
    return {"bn_train": ctx.once("bn_train", ctx.flow, bn_train=True)["log_likelihood"]}


def _check_waic(ctx: ScoreContext) -> None:
    if len(ctx.flows) < 2:
        raise InputError(f"--method waic needs an ensemble: give --model at least twice (got {len(ctx.flows)})")


def _waic(ctx: ScoreContext) -> dict[str, np.ndarray]:
    lls = [ctx.member(i)["log_likelihood"] for i in range(len(ctx.flows))]
    ctx.attrs["ensemble_size"] = len(lls)
    return {**ctx.member(0), **waic(lls)}


_N = names.METHODS  # each method's score and help: the command line lists them without importing this module
METHODS: dict[str, Method] = {m.name: m for m in [
    Method("likelihood", _likelihood, _N["likelihood"].help, _N["likelihood"].score),
    Method("complexity", _complexity, _N["complexity"].help, _N["complexity"].score, check=_check_complexity),
    Method("likelihood-ratio", _ratio, _N["likelihood-ratio"].help, _N["likelihood-ratio"].score,
           passes=lambda n: frozenset({"member0", "background"}), check=_check_ratio),
    Method("bn-train", _bn_train, _N["bn-train"].help, _N["bn-train"].score, passes=lambda n: frozenset({"bn_train"}),
           check=_check_bn),
    Method("waic", _waic, _N["waic"].help, _N["waic"].score,
           passes=lambda n: frozenset(f"member{i}" for i in range(n)), check=_check_waic),
]}
names.check("methods", METHODS, _N)

SCORES: tuple[str, ...] = tuple(m.score for m in METHODS.values())
"""The per-sample scores of the methods, all oriented higher = more in-distribution."""


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown score method {name!r}; valid methods: {', '.join(METHODS)}")
    return METHODS[name]


def total_passes(methods: list[Method], n_models: int) -> int:
    """Forward passes over the data that ``methods`` make together (shared passes count once)."""
    return len(frozenset().union(*(m.passes(n_models) for m in methods)))


def check(methods: list[Method], ctx: ScoreContext) -> None:
    """Raise before any work if a method cannot run in ``ctx`` (a missing background model, one model for waic)."""
    for m in methods:
        m.check(ctx)


def compute(methods: list[Method], ctx: ScoreContext) -> dict[str, np.ndarray]:
    """:func:`check` every method, then compute them all; the arrays of later methods win on equal names."""
    check(methods, ctx)
    arrays: dict[str, np.ndarray] = {}
    for m in methods:
        arrays.update(m.compute(ctx))
    return arrays
