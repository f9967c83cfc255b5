"""A full-covariance Gaussian as a flow: the closed-form baseline a feature flow has to beat.

``z = L^{-1} (x - mu)`` with ``Sigma = L L^T`` is an affine bijection, so the Gaussian density is the
standard normal density of ``z`` plus ``log|det dz/dx| = -sum_i log L_ii``: the model saves, loads
and scores through the same paths as every flow. Its parameters are fitted in closed form (mean and
covariance of the standardized training data), not by gradient steps. With few samples per
dimension the sample covariance is singular or badly conditioned, so it is shrunk towards a scaled
identity, by the amount that Ledoit & Wolf's estimate gives unless one is fixed.

References:
    Ledoit & Wolf, "A well-conditioned estimator for large-dimensional covariance matrices",
    Journal of Multivariate Analysis 88 (2004).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ood_flow.flows.base import Bijection


class GaussianBody(Bijection):
    """``z = L^{-1}(x - loc)`` with a lower-triangular ``L`` (the Cholesky factor of the covariance).

    The parameters are kept in float64 (the covariance of a few thousand 1280-d vectors is badly
    conditioned) and are not trained by gradient (``requires_grad=False``); :meth:`fit` sets them.
    """

    closed_form = True

    def __init__(self, dim: int):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(dim, dtype=torch.float64), requires_grad=False)
        self.scale_tril = nn.Parameter(torch.eye(dim, dtype=torch.float64), requires_grad=False)
        self.register_buffer("shrinkage", torch.tensor(0.0, dtype=torch.float64))

    def _logdet(self, n: int, dtype: torch.dtype) -> Tensor:
        return (-self.scale_tril.diagonal().log().sum()).to(dtype).expand(n)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        d = (x.to(torch.float64) - self.loc).T
        z = torch.linalg.solve_triangular(self.scale_tril, d, upper=False).T
        return z.to(x.dtype), self._logdet(x.shape[0], x.dtype)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x = self.loc + z.to(torch.float64) @ self.scale_tril.tril().T  # solve_triangular reads the lower part only
        return x.to(z.dtype), -self._logdet(z.shape[0], z.dtype)

    @torch.no_grad()
    def fit(self, x: Tensor, shrinkage: float | None = None) -> float:
        """Set mean and covariance from ``x`` (N, D); returns the shrinkage used.

        Args:
            x: training vectors (already standardized by the flow's preprocessing).
            shrinkage: weight of the scaled identity in ``(1 - a) S + a (tr S / D) I``; None:
                Ledoit & Wolf's estimate of the best weight.
        """
        from sklearn.covariance import empirical_covariance, ledoit_wolf

        if x.shape[0] < 2:
            raise ValueError(f"a Gaussian needs at least 2 training samples, got {x.shape[0]}")
        data = x.detach().to(torch.float64).cpu().numpy()
        if shrinkage is None:
            cov, shrinkage = ledoit_wolf(data)
        else:
            if not 0.0 <= shrinkage <= 1.0:
                raise ValueError(f"shrinkage must lie in [0, 1], got {shrinkage}")
            emp = empirical_covariance(data)
            cov = (1 - shrinkage) * emp + shrinkage * (emp.trace() / emp.shape[0]) * torch.eye(emp.shape[0]).numpy()
        tril, info = torch.linalg.cholesky_ex(torch.from_numpy(cov))
        if int(info) != 0:
            raise ValueError("the covariance is singular (constant or duplicate features); use a shrinkage above 0")
        self.loc.copy_(torch.from_numpy(data.mean(axis=0)))
        self.scale_tril.copy_(tril)
        self.shrinkage.fill_(float(shrinkage))
        return float(shrinkage)
