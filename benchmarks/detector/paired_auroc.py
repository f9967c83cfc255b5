"""Paired bootstrap of AUROC(flow) - AUROC(Gaussian) on the same samples (1,000 resamples of each set, seed 0).

Usage: python paired_auroc.py TAG IN_GROUP OOD_GROUP... [--flow NAME]
    reads TAG-NAME-scores.h5 (NAME: tabular unless given) and TAG-gaussian-scores.h5
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


def main(tag: str, in_group: str, oods: list[str], flow: str = "tabular") -> None:
    rng = np.random.default_rng(0)
    f_in, g_in = read(tag, flow, in_group), read(tag, "gaussian", in_group)
    for ood in oods:
        f_out, g_out = read(tag, flow, ood), read(tag, "gaussian", ood)
        diffs = []
        for _ in range(1000):
            i, j = rng.integers(0, len(f_in), len(f_in)), rng.integers(0, len(f_out), len(f_out))
            diffs.append(auroc(f_in, f_out, i, j) - auroc(g_in, g_out, i, j))
        every = np.arange(len(f_in)), np.arange(len(f_out))
        d = auroc(f_in, f_out, *every) - auroc(g_in, g_out, *every)
        lo, hi = np.percentile(diffs, [2.5, 97.5])
        print(f"{ood}: flow - Gaussian AUROC {d:+.3f}, 95% paired bootstrap interval [{lo:+.3f}, {hi:+.3f}]")


if __name__ == "__main__":
    args = sys.argv[1:]
    flow = "tabular"
    if "--flow" in args:
        at = args.index("--flow")
        flow = args[at + 1]
        del args[at:at + 2]
    main(args[0], args[1], args[2:], flow)
