"""oodflow: out-of-distribution detection with normalizing flows.

Implements and extends Kirichenko, Izmailov & Wilson, "Why Normalizing Flows Fail to
Detect Out-of-Distribution Data" (NeurIPS 2020). Everything the ``oodflow`` command does is
one call here (see docs/api.md): :func:`train_flow`, :func:`score_source`, :func:`calibrate_model`,
:func:`evaluate_groups`, :func:`write_report`, :func:`describe_file`, :func:`embed_source` and the
``plot_*`` functions; the flows themselves are built with :func:`create_flow`.

Example:
    >>> import torch, ood_flow
    >>> flow = ood_flow.create_flow("realnvp", input_shape=(1, 28, 28), mask="cycle", channels=8, blocks=1)
    >>> flow.log_prob(torch.rand(2, 1, 28, 28)).shape   # nats, inputs in [0, 1]
    torch.Size([2])
"""

import logging
from importlib import import_module

from ood_flow.version import __version__

# The API reports through loggers under "ood_flow" (ood_flow.log); it shows nothing until the application
# configures logging, e.g. logging.basicConfig(level=logging.INFO).
logging.getLogger("ood_flow").addHandler(logging.NullHandler())

# Everything is imported on first use: ``import ood_flow`` stays light (not even torch), so the command line
# starts fast and ``oodflow --help`` imports none of it.
_LAZY = {
    "MODELS": "ood_flow.flows", "Bijection": "ood_flow.flows", "Flow": "ood_flow.flows",
    "batchnorm_train": "ood_flow.flows", "create_flow": "ood_flow.flows", "load_checkpoint": "ood_flow.flows",
    "load_model": "ood_flow.flows", "save_model": "ood_flow.flows",
    "train_flow": "ood_flow.train", "TrainConfig": "ood_flow.train", "TrainEvents": "ood_flow.train",
    "TrainResult": "ood_flow.train",
    "score_source": "ood_flow.score", "ScoreResult": "ood_flow.score", "GateSpec": "ood_flow.score",
    "METHODS": "ood_flow.score", "calibrate_model": "ood_flow.score.calibrate",
    "CalibrateResult": "ood_flow.score.calibrate",
    "evaluate_groups": "ood_flow.evaluate", "Evaluation": "ood_flow.evaluate", "Typicality": "ood_flow.evaluate",
    "Bootstrap": "ood_flow.evaluate", "bootstrap_intervals": "ood_flow.evaluate",
    "write_report": "ood_flow.report", "ReportResult": "ood_flow.report", "describe_file": "ood_flow.info",
    "embed_source": "ood_flow.embed", "EmbedResult": "ood_flow.embed",
    "plot_latents": "ood_flow.visualize", "plot_coupling": "ood_flow.visualize", "plot_samples": "ood_flow.visualize",
    "plot_resample": "ood_flow.visualize", "plot_histogram": "ood_flow.visualize", "Plotted": "ood_flow.visualize",
    "load_source": "ood_flow.data", "read_source": "ood_flow.data", "SourceOptions": "ood_flow.data",
    "Dataset": "ood_flow.data",
    "read_scores": "ood_flow.store", "read_group": "ood_flow.store", "list_groups": "ood_flow.store",
    "read_features": "ood_flow.store",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ood_flow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["__version__", *_LAZY]
