"""The registry of per-sample scores that ``oodflow score --method`` can compute.

Every method returns arrays oriented like the log-likelihood: higher = more in-distribution.
A method gets a :class:`ScoreContext` (the model(s), the data, the options) and returns a dict of
per-sample arrays that are stored as datasets of the score group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ood_flow.flows.models import Flow
from ood_flow.score.likelihood import score_likelihood


@dataclass
class ScoreContext:
    """Everything a score method may use."""

    flows: list[Flow]
    x: torch.Tensor
    keys: torch.Tensor
    batch_size: int = 256
    dequant_samples: int = 1
    seed: int = 0
    options: dict = field(default_factory=dict)
    progress: Callable[[int], None] | None = None

    @property
    def flow(self) -> Flow:
        return self.flows[0]

    def likelihood(self, flow: Flow | None = None, x: torch.Tensor | None = None, **kwargs) -> dict[str, np.ndarray]:
        return score_likelihood(flow or self.flow, self.x if x is None else x, self.keys, batch_size=self.batch_size,
                                dequant_samples=self.dequant_samples, seed=self.seed, **kwargs)


@dataclass(frozen=True)
class Method:
    name: str
    compute: Callable[[ScoreContext], dict[str, np.ndarray]]
    help: str
    passes: int = 1  # forward passes over the data (for progress bars)


def _likelihood(ctx: ScoreContext) -> dict[str, np.ndarray]:
    return ctx.likelihood(progress=ctx.progress)


METHODS: dict[str, Method] = {
    "likelihood": Method("likelihood", _likelihood,
                         "log_likelihood (nats of the 8-bit data), bits_per_dim, log_prior, log_det."),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown score method {name!r}; valid methods: {', '.join(METHODS)}")
    return METHODS[name]
