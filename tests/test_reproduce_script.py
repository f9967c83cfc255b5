"""benchmarks/reproduce/reproduce.py without training: verdicts, the JSON and markdown it writes, resuming.

The real run (hours at the cpu preset) stays out of the test suite; here the experiments run against
a fake CLI runner that returns canned JSON.
"""

from __future__ import annotations

import functools
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
from portable import portable  # noqa: E402  (benchmarks/portable.py, on the path reproduce.py sets)
from repro_report import minutes, render_markdown, write_report  # noqa: E402
from repro_runner import Runner  # noqa: E402


class FakeRunner:
    """Canned CLI answers: AUROC from ``aurocs[(tag, group)]``, mean bits/dim from ``bpd[(tag, group)]``."""

    def __init__(self, tmp_path: Path, aurocs: dict, bpd: dict, converged: bool = True):
        self.work, self.aurocs, self.bpd, self.calls, self.converged = tmp_path, aurocs, bpd, [], converged

    def train(self, out, data, limit, *options):
        self.calls.append(("train", out.name, options))
        return {"steps": 100, "seconds": 36.0, "val_bpd": 3.1, "epochs": 7, "parameters": 1000,
                "stopped_early": self.converged, "interrupted": False}

    def score(self, model, scores, source, name, limit, *options):
        return {"mean_bits_per_dim": self.bpd[(model.stem, name)]}

    def evaluate(self, scores, in_group, ood_groups, plot):
        stem = scores.name.removesuffix("-scores.h5")
        return {g: {"auroc": self.aurocs[(stem, g)], "n_in": 10, "n_ood": 10} for g in ood_groups}

    def embed(self, *args):
        self.calls.append(("embed", *args))

    def figure(self, name):
        return self.work / name


def _masks(tmp_path, bpd_cycle_mnist: float, converged: bool = True, gap_horizontal: float = 0.05):
    bpd = {}
    means = {"checkerboard": (3.0, 2.0), "horizontal": (3.0 + gap_horizontal, 2.9), "cycle": (3.3, bpd_cycle_mnist)}
    for mask, (fm, mn) in means.items():
        bpd.update({(f"mask-{mask}", "fashionmnist-test"): fm, (f"mask-{mask}", "mnist-test"): mn,
                    (f"mask-{mask}", "notmnist-test"): 4.0})
    aurocs = {(f"mask-{m}", g): a for m, a in (("checkerboard", 0.1), ("horizontal", 0.3), ("cycle", 0.6))
              for g in ("mnist-test", "notmnist-test")}
    runner = FakeRunner(tmp_path, aurocs, bpd, converged)
    return rx.masks(runner, rx.CPU), runner


def test_masks_claim_holds_only_when_every_part_holds_on_converged_models(tmp_path):
    exp, runner = _masks(tmp_path, bpd_cycle_mnist=3.6)
    assert exp["verdict"] == "holds" and exp["id"] == "masks"
    gap = {r["variant"]: r["bpd_gap"] for r in exp["rows"] if r["ood"] == "mnist"}
    assert gap == pytest.approx({"RealNVP checkerboard": 0.0, "RealNVP horizontal": 0.05, "RealNVP cycle": 0.3})
    trains = [c[2] for c in runner.calls if c[0] == "train"]
    assert all(("--scales", "1", "--couplings", "8") == o[o.index("--scales"):o.index("--scales") + 4] for o in trains)
    assert all("--preset" in o and "--patience" in o for o in trains)
    assert _masks(tmp_path, bpd_cycle_mnist=3.0)[0]["verdict"] == "does not hold"  # cycle still prefers MNIST
    # horizontal's AUROC can only be compared with checkerboard's at equal fit
    unequal = _masks(tmp_path, bpd_cycle_mnist=3.6, gap_horizontal=2.5)[0]
    assert unequal["verdict"] == "inconclusive at this budget" and "not at equal fit" in unequal["reason"]
    assert _masks(tmp_path, bpd_cycle_mnist=3.0, gap_horizontal=2.5)[0]["verdict"] == "does not hold"
    unconverged = _masks(tmp_path, bpd_cycle_mnist=3.6, converged=False)[0]
    assert unconverged["verdict"] == "inconclusive at this budget" and "not converged" in unconverged["reason"]


def test_bottleneck_needs_falling_ood_likelihood_and_the_same_in_distribution_fit(tmp_path):
    def run(in_bpd: dict):
        ood = {None: 2.0, 100: 2.2, 50: 2.4, 10: 2.6}
        bpd = {}
        for d in rx.BOTTLENECKS:
            tag = f"bottleneck-{d or 'none'}"
            bpd.update({(tag, "fashionmnist-test"): in_bpd[d], (tag, "mnist-test"): ood[d],
                        (tag, "notmnist-test"): 4.0})
        groups = ("mnist-test", "notmnist-test")
        aurocs = {(f"bottleneck-{d or 'none'}", g): 0.3 for d in rx.BOTTLENECKS for g in groups}
        return rx.bottleneck(FakeRunner(tmp_path, aurocs, bpd), rx.CPU)

    assert run({None: 3.0, 100: 3.05, 50: 3.08, 10: 3.09})["verdict"] == "holds"
    worse_fit = run({None: 3.0, 100: 3.05, 50: 3.08, 10: 3.5})
    assert worse_fit["verdict"] == "does not hold" and "+0.500" in worse_fit["reason"]


def test_table1_rows_carry_the_papers_auroc_as_a_fraction(tmp_path):
    tags = ("realnvp-fashionmnist", "glow-fashionmnist")
    bpd = {(t, g): 3.0 for t in tags for g in ("fashionmnist-test", "mnist-test", "notmnist-test")}
    aurocs = {(t, g): a for t in tags for g, a in (("mnist-test", 0.2), ("notmnist-test", 0.7))}
    exp = rx.table1(FakeRunner(tmp_path, aurocs, bpd), rx.CPU)
    assert [(r["variant"], r["ood"], r["auroc"], r["auroc_paper"]) for r in exp["rows"]] == [
        ("RealNVP", "mnist", 0.2, 0.108), ("RealNVP", "notmnist", 0.7, 0.721),
        ("Glow", "mnist", 0.2, 0.133), ("Glow", "notmnist", 0.7, 0.802)]
    assert exp["verdict"] == "holds" and "paper" in exp["budget"] and "ours" in exp["budget"]


def test_json_lists_experiments_with_the_required_fields_and_markdown_shows_them(tmp_path):
    exp, _ = _masks(tmp_path, bpd_cycle_mnist=3.6)
    results = {"preset": "cpu", "quick": False, "complete": False, "experiments": []}
    reproduce.assemble(results, {"masks": {**exp, "finished": True}})
    md, js = write_report(results, tmp_path / "out")
    data = json.loads(js.read_text())
    assert [e["id"] for e in data["experiments"]] == list(rx.EXPERIMENTS)
    for e in data["experiments"]:
        assert {"id", "claim", "verdict", "budget", "rows"} <= set(e) and e["verdict"] in rx.VERDICTS
        for r in e["rows"]:
            assert {"variant", "ood", "auroc", "auroc_paper", "bpd_in", "bpd_ood"} <= set(r)
            assert r["variant"].startswith(("RealNVP", "Glow"))
    assert data["experiments"][1]["verdict"] == "inconclusive at this budget"  # not run
    text = md.read_text()
    assert text == render_markdown(data)
    assert "| RealNVP cycle | MNIST | 0.600 | — | 3.300 | 3.600 | +0.300 | 3.100 | 7 | yes | 10 / 10 |" in text
    assert "**Incomplete**" in text and "**holds**" in text


def test_previous_keeps_finished_experiments_of_the_same_preset(tmp_path):
    js = tmp_path / "reproduction.json"
    js.write_text(json.dumps({"preset": "cpu", "quick": False, "experiments": [
        {"id": "masks", "finished": True}, {"id": "bottleneck", "finished": False}]}))
    assert list(reproduce.previous(js, "cpu", False)) == ["masks"]
    assert reproduce.previous(js, "paper", False) == {}


def test_runner_resumes_a_cut_off_training_and_keeps_a_finished_one(tmp_path):
    calls = []

    class Recording(Runner):
        def json(self, *args):
            calls.append(args)
            return {"steps": 5, "interrupted": False}

    r = Recording(data_dir=tmp_path, work=tmp_path, figures=tmp_path)
    out = tmp_path / "m.pt"
    r.train(out, "fashionmnist:train", 10, "--mask", "cycle")
    assert "--overwrite" in calls[-1] and "--mask" in calls[-1]
    r.train(out, "fashionmnist:train", 10, "--mask", "cycle")
    assert len(calls) == 1  # kept: m.train.json says it finished
    out.with_suffix(".train.json").unlink()
    out.with_suffix(".ckpt.pt").write_bytes(b"")
    r.train(out, "fashionmnist:train", 10, "--mask", "cycle")
    assert "--resume" in calls[-1] and "--mask" not in calls[-1]


def test_selected_experiments():
    assert reproduce.selected("") == list(rx.EXPERIMENTS)
    assert reproduce.selected("negative, masks") == ["negative", "masks"]
    with pytest.raises(ValueError, match="unknown experiment nope"):
        reproduce.selected("masks,nope")


def test_minutes():
    assert (minutes(59.6), minutes(3725), minutes(None)) == ("1 min 00 s", "62 min 05 s", "—")


def _script(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH / "reproduce.py"), *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_help_names_the_presets_and_resuming():
    proc = _script("--help")
    assert proc.returncode == 0
    assert all(opt in proc.stdout for opt in ("--preset", "--only", "--work", "--report-only", "resumable"))


def test_missing_data_root_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OODFLOW_DATA_DIR"}
    proc = _script("--quick", "--work", str(tmp_path), env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: no data root")
    assert not any(tmp_path.iterdir())


def test_unfinished_experiments_say_how_far_their_trainings_got(tmp_path):
    class Info(Runner):
        def json(self, *args):
            return {"steps": 400, "best_val_bits_per_dim": 4.131}

    (tmp_path / "mask-checkerboard.pt").write_bytes(b"")
    results = {"experiments": []}
    reproduce.assemble(results, {}, Info(data_dir=tmp_path, work=tmp_path, figures=tmp_path))
    masks = results["experiments"][0]
    assert masks["verdict"] == "inconclusive at this budget" and masks["claim"] == rx.CLAIMS["masks"]
    assert ("mask-checkerboard 400 steps, best validation bits/dim 4.131, not converged; mask-horizontal not started"
            in masks["reason"])


def test_two_runs_with_different_only_keep_each_others_finished_experiments(tmp_path):
    js = tmp_path / "reproduction.json"
    finished = {k: {**reproduce.unfinished(k, "x"), "verdict": rx.HOLDS, "finished": True}
                for k in ("masks", "bottleneck")}

    def run(key):  # what each run holds in memory: only its own finished experiment
        results = {"preset": "cpu", "quick": False, "experiments": []}
        reproduce.save(results, {key: finished[key]}, js, rx.CPU, False)

    run("masks")
    run("bottleneck")  # started before masks finished, so it never read masks' result itself
    kept = {e["id"]: e for e in json.loads(js.read_text())["experiments"]}
    assert kept["masks"]["finished"] and kept["bottleneck"]["finished"]
    assert kept["masks"]["verdict"] == kept["bottleneck"]["verdict"] == rx.HOLDS
    assert not kept["negative"]["finished"]


def test_a_rerun_replaces_its_own_figures(tmp_path):
    calls = []

    class Recording(Runner):
        def json(self, *args):
            calls.append(args)
            return {"ood": {}}

    r = Recording(data_dir=tmp_path, work=tmp_path, figures=tmp_path)
    r.evaluate(tmp_path / "s.h5", "a", ["b"], r.figure("h.png"))
    args = calls[-1]
    assert args[args.index("--plot") + 1] == str(tmp_path / "h.png") and "--overwrite" in args


def test_table2a_puts_the_papers_cifar10_celeba_number_beside_ours(tmp_path):
    runner = FakeRunner(tmp_path, {("emb-cifar10-flow", "celeba"): 0.97},
                        {("emb-cifar10-flow", "cifar10-test"): -1.0, ("emb-cifar10-flow", "celeba"): 2.0})
    runner.data_dir = tmp_path
    exp = rx.table2a(runner, rx.CPU)
    (r,) = exp["rows"]
    assert (r["ood"], r["auroc"], r["auroc_paper"], r["bpd_in"], r["bpd_ood"]) == ("celeba", 0.97, 0.9999, -1.0, 2.0)
    assert exp["verdict"] == "holds" and r["variant"].startswith("RealNVP")
    embedded = [c[1] for c in runner.calls if c[0] == "embed"]
    assert embedded == ["cifar10:train", "cifar10:test", str(tmp_path / "CelebA" / "img_align_celeba")]


def test_the_report_records_commands_without_the_machines_paths(tmp_path, monkeypatch):
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout='{"ood": {}}'))
    work, data = tmp_path / "work" / "cpu", tmp_path / "data"
    r = Runner(data_dir=data, work=work, figures=BENCH.parent / "results" / "figures",
               shown=functools.partial(portable, data=data, work=tmp_path / "work"))
    r.evaluate(work / "s.h5", "a", ["b"], r.figures / "h.png")
    r.embed(str(data / "CelebA"), 10, work / "e.h5")
    assert r.commands == [
        "oodflow evaluate <work>/cpu/s.h5 --in a --ood b --plot benchmarks/results/figures/h.png --overwrite --ci 0.95 "
        "--quiet --json", "oodflow embed <data>/CelebA --limit 10 --out <work>/cpu/e.h5 --quiet"]
