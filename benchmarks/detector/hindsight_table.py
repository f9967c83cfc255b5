"""AUROC of every feature-flow variant beside the Gaussian's, with each variant's best validation bits/dim.

Usage: python hindsight_table.py TAG IN_GROUP OOD_GROUP...   (reads TAG-NAME-scores.h5, TAG-NAME.train.json)
"""

import json
import sys

from ood_flow import store
from ood_flow.evaluate import ood_metrics

VARIANTS = ["tabular", "tabular-h128", "tabular-h256", "tabular-lr3e-4", "tabular-n0.03", "tabular-n0.1",
            "tabular-n0.3"]


def auroc(path: str, in_group: str, ood: str) -> float:
    return ood_metrics(store.read_scores(path, in_group), store.read_scores(path, ood))["auroc"]


def best_val(tag: str, name: str) -> float:
    """The best validation bits/dim of model TAG-NAME (the Gaussian's only one), from its train.json."""
    info = json.load(open(f"{tag}-{name}.train.json"))
    if info.get("best_val_bpd") is not None:
        return info["best_val_bpd"]
    if info.get("family") == "gaussian":  # fitted in closed form: one model, its validation bits/dim
        return info["val_bpd"]
    from ood_flow import load_checkpoint  # a train.json from before best_val_bpd was reported
    extra = load_checkpoint(f"{tag}-{name}.pt")[1]
    return next(h["val_bpd"] for h in extra["history"] if h["epoch"] == extra["best_epoch"])


def main(tag: str, in_group: str, oods: list[str]) -> None:
    print(f"{'model':16s} {'val bits/dim':>12s} " + " ".join(f"{o:>14s}" for o in oods))
    gauss = [auroc(f"{tag}-gaussian-scores.h5", in_group, o) for o in oods]
    print(f"{'gaussian':16s} {best_val(tag, 'gaussian'):12.4f} " + " ".join(f"{a:14.3f}" for a in gauss))
    best = [0.0] * len(oods)
    for name in VARIANTS:
        a = [auroc(f"{tag}-{name}-scores.h5", in_group, o) for o in oods]
        best = [max(b, x) for b, x in zip(best, a)]
        print(f"{name:16s} {best_val(tag, name):12.4f} " + " ".join(f"{x:14.3f}" for x in a))
    print(f"{'best flow - Gaussian':29s} " + " ".join(f"{b - g:+14.3f}" for b, g in zip(best, gauss)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
