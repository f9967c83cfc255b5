"""oodflow: out-of-distribution detection with normalizing flows.

Implements and extends Kirichenko, Izmailov & Wilson, "Why Normalizing Flows Fail to
Detect Out-of-Distribution Data" (NeurIPS 2020).

Example:
    >>> import ood_flow
    >>> flow = ood_flow.create_flow("realnvp", input_shape=(1, 28, 28), mask="cycle")
    >>> lp = flow.log_prob(x)            # (B,) nats, x in [0, 1]
    >>> ood_flow.save_model(flow, "m.pt")
"""

from ood_flow.version import __version__  # noqa: F401

from ood_flow.flows import (  # noqa: E402
    MODELS,
    Bijection,
    Flow,
    batchnorm_train,
    create_flow,
    load_checkpoint,
    load_model,
    save_model,
)

__all__ = ["__version__", "MODELS", "Bijection", "Flow", "batchnorm_train", "create_flow", "load_checkpoint",
           "load_model", "save_model"]
