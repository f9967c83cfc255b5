"""benchmarks/results/gate.md from the results of measure.py (rerun: python benchmarks/gate/report.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ood_flow.score.evidence import flag_rate


def _rate(r: float, trials: int) -> str:
    """A resampled rate with its binomial noise: ``0.4 % ±0.3`` (two standard errors), or the 95 % upper bound
    ``< 0.15 %`` when none of the trials failed."""
    if r == 0:
        return f"< {100 * 3 / trials:.2g} %"
    return f"{100 * r:.3g} % ±{200 * math.sqrt(r * (1 - r) / trials):.1g}"


def _pct(r: float) -> str:
    return "0" if r < 5e-5 else f"{100 * r:.3g} %"


def write_report(res: dict) -> str:
    b = res["batches"]
    out = [
        "# The gate, measured",
        "",
        f"`{res['command']}` ({res['date']}; inputs from `benchmarks/gate/prepare.sh`). Every number below is drawn "
        "from the full FashionMNIST, MNIST and notMNIST test sets, which played no part in training, in any choice, "
        "or in the model files' calibration. A calibration set of n FashionMNIST test scores is drawn afresh for "
        f"each of {b} batches of m further ones (disjoint from it); the gate is `--tpr {res['tpr']}`, "
        f"`--alpha {res['alpha']}`, `--confidence {res['confidence']}` (default), or `--marginal`; the old rule "
        "(fail when the flagged share exceeds F) runs on the same batches.",
        "",
        f"- *resampled*: the share of the {b} in-distribution batches that failed, with two binomial standard "
        f"errors (none failed: the 95 % upper bound, 3/{b}).",
        f"- *per calibration set*: each of {res['sets']} calibration sets' own false-alarm rate, computed exactly "
        "(hypergeometric: batches drawn from the rest of the pool); its 90th, 95th and 99th percentiles. The default "
        "guarantee: the 95th percentile is at most alpha.",
        "",
    ]
    out += summary(res) + [""]
    for label, m in res["models"].items():
        out += [f"## {label}", "", "### False alarms (in-distribution batches)", "",
                "| n | m | F | default: resampled | per set p90 / p95 / p99 | marginal: resampled "
                "| old rule: resampled | old rule per set p90 / p99 |",
                "|---:|---:|---:|---|---|---|---|---|"]
        for row in m["false_alarms"]:
            r, s = row["marginal_resampled"], row["per_set"]
            out.append(f"| {row['n']} | {row['m']} | {row['F']:g} | {_rate(r['default'], b)} | "
                       f"{_pct(s['default']['p90'])} / {_pct(s['default']['p95'])} / {_pct(s['default']['p99'])} | "
                       f"{_rate(r['marginal'], b)} | {_rate(r['old'], b)} | {_pct(s['old']['p90'])} / "
                       f"{_pct(s['old']['p99'])} |")
        out += ["", "### Power (share of batches that fail, default gate)", "",
                "| OOD set | share OOD | n | F | m = " + " | m = ".join(str(x) for x in _sizes(m)) + " |",
                "|---|---:|---:|---:|" + "---:|" * len(_sizes(m))]
        cells: dict = {}
        for row in m["power"]:
            cells.setdefault((row["ood"], row["q"], row["n"], row["F"]), {})[row["m"]] = row["fail"]["default"]
        for (ood, q, n, f), by_m in cells.items():
            out.append(f"| {ood} | {q:.0%} | {n} | {f:g} | " + " | ".join(_pct(by_m[x]) for x in _sizes(m)) + " |")
        d = m["drift"]
        _, (low, high) = flag_rate(round(d["expected_flag_rate"] * (d["n"] + 1)), d["n"])
        out += ["", "### The model file's own calibration on the test set", "",
                f"Its {d['n']} calibration scores (the training calibration split) set a threshold that flags "
                f"{_pct(d['test_flag_rate'])} of the FashionMNIST test set, against {_pct(d['expected_flag_rate'])} "
                f"expected of data exchangeable with it ({_pct(low)}-{_pct(high)} for 95 % of calibration sets: "
                f"{'inside, no sign of drift' if low <= d['test_flag_rate'] <= high else 'OUTSIDE: drift'}); "
                f"in-distribution test batches of {d['m']} then fail at F = 0 "
                f"with probability {_pct(d['false_alarm_F0']['default'])} (default gate), "
                f"{_pct(d['false_alarm_F0']['marginal'])} (marginal), {_pct(d['false_alarm_F0']['old'])} (old rule).",
                ""]
    return "\n".join(out)


def summary(res: dict) -> list[str]:
    """The headline table: per model, the default gate's worst cell, the old rule's, the power at one setting."""
    b = res["batches"]
    lines = ["## Summary", "",
             "Worst cell over n = 50, 150, 1000 calibration scores, m = 20-1000, F = 0 and 0.05 (in-distribution "
             "batches); power at n = 150, m = 200, F = 0.05 (share of batches failed). The default guarantee: "
             "the 95th percentile of the per-set false-alarm rate is at most 1 %.", "",
             "| model | default: resampled, worst | per set p95, worst | per set p99, worst | old rule at m = 200, "
             "F = 0.05 | fails: all MNIST | all notMNIST | 20 % notMNIST | 20 % MNIST |",
             "|---|---|---|---|---|---:|---:|---:|---:|"]
    for label, m in res["models"].items():
        fa = m["false_alarms"]
        worst = max(fa, key=lambda r: r["marginal_resampled"]["default"])
        old = next(r for r in fa if r["n"] == 150 and r["m"] == 200 and r["F"] == 0.05)["marginal_resampled"]["old"]
        power = {(r["ood"], r["q"]): r["fail"]["default"] for r in m["power"]
                 if r["n"] == 150 and r["m"] == 200 and r["F"] == 0.05}
        lines.append(f"| {label} | {_rate(worst['marginal_resampled']['default'], b)} (n {worst['n']}, m "
                     f"{worst['m']}, F {worst['F']:g}) | {_pct(max(r['per_set']['default']['p95'] for r in fa))} | "
                     f"{_pct(max(r['per_set']['default']['p99'] for r in fa))} | {_rate(old, b)} | "
                     f"{_pct(power['mnist', 1.0])} | {_pct(power['notmnist', 1.0])} | {_pct(power['notmnist', 0.2])} | "
                     f"{_pct(power['mnist', 0.2])} |")
    return lines


def _sizes(m: dict) -> list[int]:
    return sorted({row["m"] for row in m["power"]})


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
    (root / "gate.md").write_text(write_report(json.loads((root / "gate.json").read_text())))
