"""Paired bootstrap of AUROC(flow) - AUROC(Gaussian) on the same samples (1,000 resamples of each set, seed 0).

Usage: python paired_auroc.py TAG IN_GROUP OOD_GROUP... [--flow NAME] [--gaussian NAME]
    reads TAG-FLOW-scores.h5 (FLOW: tabular unless given) and TAG-GAUSSIAN-scores.h5 (GAUSSIAN: gaussian)
"""

import sys

import numpy as np
from sklearn.metrics import roc_auc_score

from ood_flow import store


def read(tag: str, model: str, group: str) -> np.ndarray:
    return store.read_group(f"{tag}-{model}-scores.h5", group)[0]["log_likelihood"]


def auroc(x_in: np.ndarray, x_out: np.ndarray, i: np.ndarray, j: np.ndarray) -> float:
    y = np.r_[np.ones(len(i)), np.zeros(len(j))]
    return roc_auc_score(y, np.r_[x_in[i], x_out[j]])


def main(tag: str, in_group: str, oods: list[str], flow: str = "tabular", gaussian: str = "gaussian") -> None:
    rng = np.random.default_rng(0)
    f_in, g_in = read(tag, flow, in_group), read(tag, gaussian, in_group)
    for ood in oods:
        f_out, g_out = read(tag, flow, ood), read(tag, gaussian, ood)
        diffs = []
        for _ in range(1000):
            i, j = rng.integers(0, len(f_in), len(f_in)), rng.integers(0, len(f_out), len(f_out))
            diffs.append(auroc(f_in, f_out, i, j) - auroc(g_in, g_out, i, j))
        every = np.arange(len(f_in)), np.arange(len(f_out))
        d = auroc(f_in, f_out, *every) - auroc(g_in, g_out, *every)
        lo, hi = np.percentile(diffs, [2.5, 97.5])
        print(f"{ood}: flow {auroc(f_in, f_out, *every):.3f}, Gaussian {auroc(g_in, g_out, *every):.3f}, "
              f"flow - Gaussian AUROC {d:+.3f}, 95% paired bootstrap interval [{lo:+.3f}, {hi:+.3f}]")


def option(args: list[str], name: str, default: str) -> str:
    """The value of ``--name VALUE`` in ``args`` (removed from it), or ``default``."""
    if name not in args:
        return default
    at = args.index(name)
    value = args[at + 1]
    del args[at:at + 2]
    return value


if __name__ == "__main__":
    argv = sys.argv[1:]
    flow_name, gaussian_name = option(argv, "--flow", "tabular"), option(argv, "--gaussian", "gaussian")
    main(argv[0], argv[1], argv[2:], flow_name, gaussian_name)
