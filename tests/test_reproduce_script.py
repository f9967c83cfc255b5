"""benchmarks/reproduce/reproduce.py without training: the report it writes, its verdicts and its command line.

The real runs (an hour for the full reproduction, ~10 minutes for --quick) stay out of the test
suite; here the experiments run against a fake CLI runner that returns canned JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "reproduce"
sys.path.insert(0, str(BENCH))

import repro_experiments as rx  # noqa: E402
import reproduce  # noqa: E402
from repro_report import minutes, render_markdown, write_report  # noqa: E402


def fake_results(quick: bool = False) -> dict:
    row = {"variant": "RealNVP", "ood": "MNIST", "auroc": 0.1234, "paper": 10.8, "fpr95": 0.99, "n_in": 2000,
           "n_ood": 2000, "bpd_in": 3.456, "bpd_ood": 2.5}
    claim = {**row, "variant": "cycle", "paper": None, "bpd_in": None}
    return {"quick": quick, "complete": True, "command": "python benchmarks/reproduce.py", "started": "t0",
            "finished": "t1", "wall_s": 700.0, "environment": {"cpus": 2, "omp_num_threads": "1"},
            "experiments": {
                "2": {"title": "Masks", "config": "cfg2", "samples": "first 1000", "rows": [claim],
                      "paper": "qualitative — cycle helps", "verdict": "partly agrees", "why": "budget",
                      "figures": [["cycle", "figures/mask-cycle-hist.png"]], "commands": ["oodflow train x"],
                      "wall_s": 100.0},
                "1": {"title": "Table 1", "config": "cfg1", "samples": "first 2000", "rows": [row],
                      "paper": "Table 1", "verdict": "agrees qualitatively", "why": "budget", "figures": [],
                      "commands": [], "wall_s": 572.3},
                "6": {"title": "CIFAR", "error": "`oodflow train` failed with exit code 1", "wall_s": 28.0}}}


def test_markdown_has_our_number_beside_the_papers():
    md = render_markdown(fake_results())
    assert "| RealNVP | MNIST | 12.3 | 10.8 | 99.0 | 3.46 | 2.50 | 2000 / 2000 |" in md
    assert "| cycle | MNIST | 12.3 | — | 99.0 | — | 2.50 | 2000 / 2000 |" in md
    assert "Paper: qualitative — cycle helps." in md
    with_ci = fake_results()
    with_ci["experiments"]["1"]["rows"][0]["auroc_ci"] = [0.1012, 0.1456]
    assert "| RealNVP | MNIST | 12.3 [10.1, 14.6] | 10.8 | 99.0 |" in render_markdown(with_ci)
    assert "![cycle](figures/mask-cycle-hist.png)" in md
    assert "QUICK RUN" not in md and "Incomplete" not in md


def test_markdown_orders_experiments_and_reports_wall_time_and_failures():
    md = render_markdown(fake_results())
    assert md.index("## 1. Table 1") < md.index("## 2. Masks") < md.index("## 6. CIFAR")
    assert "| 1 | [Table 1](#1) | 9 min 32 s | agrees qualitatively |" in md
    assert "| 6 | [CIFAR](#6) | 28 s | **failed**: `oodflow train` failed with exit code 1 |" in md
    assert "Wall time of all experiments 11 min 40 s" in md
    assert "oodflow train x" in md


def test_merged_reports_say_when_and_where_each_experiment_ran():
    results = fake_results()
    results["command"] = "python benchmarks/reproduce.py --only 6"
    results["experiments"]["1"].update(run_at="2026-11-28T16:29:09+00:00", git="552b78d")
    md = render_markdown(results)
    assert "Merged report" in md
    assert "- Wall time: 9 min 32 s (finished 2026-11-28T16:29:09+00:00, git 552b78d)" in md
    assert "- Wall time: 28 s\n" in md
    assert "Merged report" not in render_markdown(fake_results())


def test_quick_and_incomplete_runs_are_marked():
    results = fake_results(quick=True)
    results["complete"] = False
    md = render_markdown(results)
    assert "**QUICK RUN**" in md and "**Incomplete**" in md


def test_write_report_writes_markdown_and_json(tmp_path):
    md, js = write_report(fake_results(), tmp_path / "out")
    assert md.read_text() == render_markdown(fake_results())
    assert json.loads(js.read_text())["experiments"]["1"]["rows"][0]["auroc"] == 0.1234
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["reproduction.json", "reproduction.md"]


def test_minutes():
    got = (minutes(59.6), minutes(60), minutes(3725), minutes(None))
    assert got == ("1 min 00 s", "1 min 00 s", "62 min 05 s", "—")


def test_selected_experiments():
    assert reproduce.selected("") == [1, 2, 3, 4, 5, 6]
    assert reproduce.selected("4, 1") == [4, 1]
    with pytest.raises(ValueError, match="unknown experiment 7"):
        reproduce.selected("1,7")


class FakeRunner:
    """Canned CLI answers: each group's AUROC comes from ``aurocs[(model stem, group)]``."""

    def __init__(self, tmp_path: Path, aurocs: dict):
        self.work, self.figures, self.cache, self.aurocs, self.calls = tmp_path, tmp_path, {}, aurocs, []

    def train(self, out, data, limit, *options):
        self.calls.append(("train", out.name, options))
        return {"n_train": 3800, "n_val": 200}

    def score(self, model, scores, source, name, limit, *options):
        self.calls.append(("score", model.name, source, options))
        return {"mean_bits_per_dim": 3.0 if name.startswith("fashion") else 2.0}

    def evaluate(self, scores, in_group, ood_groups, plot):
        stem = scores.name.removesuffix("-scores.h5")
        return {g: {"auroc": self.aurocs[(stem, g)], "fpr95": 0.5, "n_in": 10, "n_ood": 10} for g in ood_groups}

    def run(self, *args):
        self.calls.append(args)

    def figure(self, name):
        return self.figures / name


def test_table1_rows_and_verdict_follow_the_scores(tmp_path):
    aurocs = {("realnvp-fmnist", "mnist-test"): 0.2, ("realnvp-fmnist", "notmnist-test"): 0.7,
              ("glow-fmnist", "mnist-test"): 0.6, ("glow-fmnist", "notmnist-test"): 0.9}
    exp = rx.table1(FakeRunner(tmp_path, aurocs), rx.QUICK)
    assert [(r["variant"], r["ood"], r["auroc"], r["paper"]) for r in exp["rows"]] == [
        ("RealNVP", "MNIST", 0.2, 10.8), ("RealNVP", "notMNIST", 0.7, 72.1),
        ("Glow", "MNIST", 0.6, 13.3), ("Glow", "notMNIST", 0.9, 80.2)]
    assert exp["verdict"].startswith("disagrees")  # Glow does not fail on MNIST here
    assert "46.7 points" in exp["verdict"]  # |60 - 13.3|


def test_masks_verdict_counts_pairs_that_beat_checkerboard(tmp_path):
    aurocs = {(f"mask-{m}", g): a for m, a in [("checkerboard", 0.3), ("horizontal", 0.4), ("cycle", 0.2)]
              for g in ("mnist-test", "notmnist-test")}
    runner = FakeRunner(tmp_path, aurocs)
    exp = rx.masks(runner, rx.QUICK)
    assert exp["verdict"].startswith("partly agrees: horizontal/cycle beat checkerboard in 2 of 4")
    trains = [c for c in runner.calls if c[0] == "train"]
    assert all(("--couplings", "4") == c[2][c[2].index("--couplings"):c[2].index("--couplings") + 2] for c in trains)


def test_cifar_scores_digits_as_rgb_32(tmp_path):
    aurocs = {("realnvp-cifar10", "mnist-test"): 0.01, ("realnvp-cifar10", "notmnist-test"): 0.3}
    runner = FakeRunner(tmp_path, aurocs)
    exp = rx.cifar(runner, rx.QUICK)
    digits = [c for c in runner.calls if c[0] == "score" and c[2] != "cifar10:test"]
    assert len(digits) == 2 and all(c[3] == ("--resize", "--rgb") for c in digits)
    assert "higher" in exp["verdict"]


def _script(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / "reproduce.py"), *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_help():
    proc = _script("--help")
    assert proc.returncode == 0
    assert all(opt in proc.stdout for opt in ("--quick", "--only", "--work", "--data-dir"))


def test_missing_data_root_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OODFLOW_DATA_DIR"}
    proc = _script("--quick", "--work", str(tmp_path), env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: no data root")
    assert not any(tmp_path.iterdir())
