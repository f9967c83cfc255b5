"""The gate measured by resampling held-out data (docs/gate.md): false alarms on in-distribution batches, power on
OOD batches and mixtures, and the drift between a model file's own calibration split and the test set.

Input: the score files of benchmarks/gate/prepare.sh (three models, each scoring the full FashionMNIST, MNIST and
notMNIST test sets). Everything here is drawn from those test-set scores, which played no part in training, in
any choice, or in the model files' calibration:

- a *calibration set* of n FashionMNIST test scores (n = 50, 150, 1000), resampled for every batch;
- a *batch* of m further FashionMNIST test scores (disjoint from that calibration set), with a share q of it
  replaced by MNIST or notMNIST test scores for power (q = 0.1, 0.2, 0.5, 1);
- the gate exactly as ``oodflow score`` applies it: :func:`~ood_flow.score.gate.fit_gate` on the calibration set
  (``--tpr 0.95``), its flags, and the batch test of :mod:`ood_flow.score.evidence` at alpha 0.01, confidence 0.95
  (the default) and marginal; beside it, the old rule (fail when the flagged share exceeds F) on the same batches.

The false-alarm rate of one calibration set (the guarantee is about these) is computed exactly, not sampled: given
the set, the flagged count of a batch drawn without replacement from the rest of the pool is hypergeometric.

Usage: python benchmarks/gate/measure.py OUT_DIR [--save] [--batches 2000] [--sets 1000]
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import hypergeom

from ood_flow import store
from ood_flow.flows import load_checkpoint
from ood_flow.score.evidence import batch_p_value, order_rank
from ood_flow.score.gate import fit_gate
from ood_flow.score.threshold import rank_at_tpr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from portable import command_line  # noqa: E402  (benchmarks/portable.py)

MODELS = {"pixel": "pixel RealNVP, cpu preset", "det-gaussian": "Lite0 Gaussian detector",
          "det-tabular": "Lite0 flow detector"}
SIZES, FRACTIONS, CALIBRATION, MIXTURES = (20, 50, 200, 1000), (0.0, 0.05), (50, 150, 1000), (0.1, 0.2, 0.5, 1.0)
TPR, ALPHA, CONFIDENCE = 0.95, 0.01, 0.95
RULES = {"default": CONFIDENCE, "marginal": None}


def critical_counts(m: int, fraction: float, n: int) -> dict[str, int]:
    """Per rule, the fewest flagged of m that fail the batch (m + 1: none does); the p-value falls as the count
    rises, so the test is ``flagged >= critical``."""
    j = order_rank(n, rank_at_tpr(n, TPR))
    out = {}
    for rule, confidence in RULES.items():
        out[rule] = next((x for x in range(m + 1) if batch_p_value(x, m, fraction, j, n, confidence) <= ALPHA),
                         m + 1)
    out["old"] = next((x for x in range(m + 1) if x / m > fraction), m + 1)  # the old rule: flagged / m > F
    return out


def draw(rng, pool_size: int, batches: int, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Per batch, a calibration set of n and a disjoint batch of m indices into the in-distribution pool."""
    keys = rng.random((batches, pool_size))
    order = np.argpartition(keys, n + m, axis=1)[:, : n + m] if n + m < pool_size else np.argsort(keys, axis=1)
    return order[:, :n], order[:, n:n + m]


def thresholds(cal_scores: np.ndarray) -> np.ndarray:
    """Per row, the gate's threshold on that calibration set, as fit_gate finds it (checked on the first row)."""
    n = cal_scores.shape[1]
    k = rank_at_tpr(n, TPR)
    t = -np.partition(-cal_scores, k - 1, axis=1)[:, k - 1]
    assert t[0] == fit_gate(cal_scores[0], TPR, score="s", reference="r").threshold
    return t


def fail_rates(flagged: np.ndarray, crit: dict[str, int]) -> dict[str, float]:
    return {rule: float(np.mean(flagged >= c)) for rule, c in crit.items()}


def false_alarms(rng, pool: np.ndarray, batches: int, sets: int) -> list[dict]:
    rows = []
    for n in CALIBRATION:
        for m in SIZES:
            cal, batch = draw(rng, len(pool), batches, n, m)
            flagged = (pool[batch] < thresholds(pool[cal])[:, None]).sum(axis=1)
            per_set = per_calibration_set(rng, pool, n, m, sets)
            for fraction in FRACTIONS:
                crit = critical_counts(m, fraction, n)
                rows.append({"n": n, "m": m, "F": fraction, "marginal_resampled": fail_rates(flagged, crit),
                             "per_set": {rule: _quantiles(per_set(c)) for rule, c in crit.items()}})
    return rows


def per_calibration_set(rng, pool: np.ndarray, n: int, m: int, sets: int, chunk: int = 500):
    """For ``sets`` calibration sets: a function of the critical count giving each set's exact false-alarm rate."""
    flagged = []
    for start in range(0, sets, chunk):
        keys = rng.random((min(chunk, sets - start), len(pool)))
        cal = np.argpartition(keys, n, axis=1)[:, :n]
        t = thresholds(pool[cal])
        below_all = (pool[None, :] < t[:, None]).sum(axis=1)
        flagged.append(below_all - (pool[cal] < t[:, None]).sum(axis=1))  # flagged in the rest of the pool
    k, rest = np.concatenate(flagged), len(pool) - n
    return lambda c: hypergeom.sf(c - 1, rest, k, m)


def _quantiles(rates: np.ndarray) -> dict[str, float]:
    return {"mean": float(np.mean(rates)), "p50": float(np.quantile(rates, 0.5)),
            "p90": float(np.quantile(rates, 0.9)), "p95": float(np.quantile(rates, 0.95)),
            "p99": float(np.quantile(rates, 0.99))}


def power(rng, pool: np.ndarray, ood: dict[str, np.ndarray], batches: int) -> list[dict]:
    rows = []
    for name, scores in ood.items():
        for q in MIXTURES:
            for n in CALIBRATION:
                for m in SIZES:
                    k = round(q * m)
                    cal, batch = draw(rng, len(pool), batches, n, m - k)
                    t = thresholds(pool[cal])[:, None]
                    bad = scores[rng.integers(0, len(scores), (batches, k))] if k else np.zeros((batches, 0))
                    flagged = (pool[batch] < t).sum(axis=1) + (bad < t).sum(axis=1)
                    for fraction in FRACTIONS:
                        rows.append({"ood": name, "q": q, "n": n, "m": m, "F": fraction,
                                     "fail": fail_rates(flagged, critical_counts(m, fraction, n))})
    return rows


def drift(model: Path, pool: np.ndarray, sets_m: int = 200) -> dict:
    """The model file's own calibration (its training calibration split) against the test pool: the share of the
    test set it flags, against the rate its size implies, and the false alarms of batches of 200 at F = 0."""
    extra = load_checkpoint(model)[1]
    cal = np.asarray(extra["calibration"]["values"])
    gate = fit_gate(cal, TPR, score="log_likelihood", reference=str(model))
    j = gate.rank
    flagged = int(np.sum(pool < gate.threshold))
    crit = critical_counts(sets_m, 0.0, len(cal))
    return {"n": len(cal), "expected_flag_rate": j / (len(cal) + 1), "test_flag_rate": flagged / len(pool),
            "m": sets_m, "false_alarm_F0": {r: float(hypergeom.sf(c - 1, len(pool), flagged, sets_m))
                                            for r, c in crit.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the folder prepare.sh wrote")
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--sets", type=int, default=1000, help="calibration sets for the per-set rates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", action="store_true", help="write benchmarks/results/gate.json and gate.md")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    results = {"command": command_line(__file__, sys.argv[1:], work=args.out),
               "date": datetime.date.today().isoformat(), "batches": args.batches, "sets": args.sets,
               "tpr": TPR, "alpha": ALPHA, "confidence": CONFIDENCE, "models": {}}
    for key, label in MODELS.items():
        groups = {g: store.read_scores(args.out / f"{key}-scores.h5", g) for g in ("fashionmnist", "mnist", "notmnist")}
        pool = groups.pop("fashionmnist")
        print(f"{label}: {len(pool)} in-distribution test scores", file=sys.stderr)
        results["models"][label] = {"false_alarms": false_alarms(rng, pool, args.batches, args.sets),
                                    "power": power(rng, pool, groups, args.batches),
                                    "drift": drift(args.out / f"{key}.pt", pool)}
    text = json.dumps(results, indent=1)
    if args.save:
        from report import write_report  # benchmarks/gate/report.py

        root = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
        (root / "gate.json").write_text(text + "\n")
        (root / "gate.md").write_text(write_report(results))
    else:
        print(text)


if __name__ == "__main__":
    main()
