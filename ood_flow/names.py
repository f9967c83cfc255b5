"""The names a user chooses among on the command line, in a module light enough to import before torch.

Each registry of the core is keyed by exactly these names and says so when it is imported (:func:`check`), so
the command line can list and check the choices (and print its help) without importing the registries
themselves, which need torch: models (:data:`ood_flow.flows.models.BUILDERS`), coupling masks and st-networks
of the image models, optimisers, presets, score methods and compressors, and the metrics of ``evaluate``.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple

MODELS = ("realnvp", "glow", "tabular", "gaussian")
IMAGE_MASKS = ("checkerboard", "horizontal", "vertical", "cycle")
IMAGE_NETS = ("resnet", "resnet-noskip", "resnet-v1", "glow", "highway")
OPTIMIZERS = ("adam", "adamw", "rmsprop")
PRESETS = ("paper", "cpu")
COMPRESSORS = ("png", "zlib", "lzma", "bz2")
METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95")  # in the order tables show them


class MethodName(NamedTuple):
    """What a ``--method`` computes: its score's dataset name, and one line of help."""

    score: str
    help: str


METHODS: dict[str, MethodName] = {
    "likelihood": MethodName("log_likelihood", "log_likelihood (nats of the 8-bit data), bits_per_dim, log_prior, "
                                               "log_det of the first --model."),
    "complexity": MethodName("complexity", "input complexity (Serra et al. 2020): log_likelihood/ln2 + L(x) in bits, "
                                           "L = length of the input compressed losslessly by --compressor (also "
                                           "stores compressed_bits)."),
    "likelihood-ratio": MethodName("likelihood_ratio", "likelihood_ratio (Ren et al. 2019): log p(x) - log p_bg(x), "
                                                       "with --background-model a flow trained on perturbed inputs "
                                                       "(oodflow train --perturb 0.2); also stores "
                                                       "background_log_likelihood."),
    "bn-train": MethodName("bn_train", "bn_train (Song et al. 2019): log-likelihood with batch norm using the "
                                       "statistics of each scored batch (--batch-size consecutive samples), so it "
                                       "depends on batch composition."),
    "waic": MethodName("waic", "waic (Choi et al. 2018): mean - var (ddof=0) of the log-likelihoods of an ensemble "
                               "given by repeating --model; also stores waic_mean and waic_var."),
}
SCORES = tuple(m.score for m in METHODS.values())
"""The per-sample scores of the methods, all oriented higher = more in-distribution."""


def check(registry: str, keys: Iterable[str], names: Iterable[str]) -> None:
    """Fail loudly, on import, when a registry's keys are not exactly the names the command line offers.

    Example:
        >>> check("optimizers", ["adam", "sgd"], OPTIMIZERS)
        Traceback (most recent call last):
        ...
        RuntimeError: registry optimizers has ['adam', 'sgd'] but ood_flow.names lists ['adam', 'adamw', 'rmsprop']
    """
    keys, names = list(keys), list(names)
    if keys != names:
        raise RuntimeError(f"registry {registry} has {keys} but ood_flow.names lists {names}")
