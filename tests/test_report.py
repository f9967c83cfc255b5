"""`oodflow report`: the page's numbers equal `evaluate --json`, it fetches nothing, and bad input is one line."""

import re

import numpy as np
import pytest
from cli_helpers import one_line_error, run, run_json, runner
from report_helpers import page_metrics

from ood_flow import store
from ood_flow.cli.main import app
from ood_flow.report import write_report


@pytest.fixture(scope="module")
def made(tmp_path_factory, report_scores):
    scores, model = report_scores
    d = scores.parent
    page = tmp_path_factory.mktemp("report") / "r.html"
    summary = run_json("report", scores, "--in", "in", "--ood", "ood", "--ood", "gated", "--out", page,
                       "--score", "log_likelihood", "--score", "log_prior", "--thumbnails", "5")
    return {"dir": d, "scores": scores, "model": model, "page": page, "html": page.read_text(), "summary": summary}


def test_every_metric_and_interval_equals_evaluate_json(made):
    evaluated = run_json("evaluate", made["scores"], "--in", "in", "--ood", "ood", "--ood", "gated", "--score",
                         "log_likelihood", "--score", "log_prior", "--ci", "0.95")
    values, intervals = page_metrics(made["html"])
    expected = {(s, g) for s, results in evaluated["by_score"].items() for g in results}
    assert set(values) == expected and len(expected) == 4
    for (score, group), shown in values.items():
        m = evaluated["by_score"][score][group]
        assert shown == {k: m[k] for k in ("auroc", "aupr_in", "aupr_out", "fpr95", "threshold")}
        assert intervals[score, group] == {k: m["ci"][k] for k in ("auroc", "aupr_in", "aupr_out", "fpr95")}
        assert f">{m['auroc']:.3f}<" in made["html"]
    assert made["summary"]["evaluation"] == evaluated


def test_page_fetches_nothing_and_runs_no_script(made):
    html = made["html"]
    assert html.startswith("<!DOCTYPE html>") and "Content-Security-Policy" in html
    assert not re.search(r"<script|<link|<iframe|<object|@import|@font-face", html, re.I)
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!data:|#)""", html), "a reference to something outside"
    assert not re.search(r"url\((?!#)", html) and "http://" not in html.replace("http://www.w3.org", "")


def test_sections_thumbnails_and_provenance(made):
    html = made["html"]
    for anchor in ("metrics", "score-log_likelihood", "score-log_prior", "thumbnails", "gate", "provenance"):
        assert f'id="{anchor}"' in html and f'href="#{anchor}"' in html
    assert html.count('<img src="data:image/png;base64,') == 15 == made["summary"]["thumbnails"]
    assert html.count("<svg") == 6  # histogram, ROC and PR for each of the two scores
    assert "m.pt" in html and "realnvp" in html and made["summary"]["warnings"] == []
    assert html.count('href="#thumbs-') == 3 and 'id="thumbs-gated"' in html  # the contents name every strip


def test_header_shows_the_command_as_typed(made, tmp_path, monkeypatch):
    argv = ["/usr/local/bin/oodflow", "report", str(made["scores"]), "--in", "in", "--ood", "ood", "--out",
            str(tmp_path / "r.html"), "--thumbnails", "0"]
    monkeypatch.setattr("sys.argv", argv)
    run(*argv[1:])
    assert f"<code>oodflow report {made['scores']} --in in --ood ood" in (tmp_path / "r.html").read_text()


def test_in_distribution_strip_shows_the_lowest_scores_in_order(made):
    scores = np.sort(store.read_scores(made["scores"], "in"))[:5]
    strip = made["html"].split("lowest log_likelihood in in")[1].split("</div></div>")[0]
    shown = [float(s) for s in re.findall(r'<span class="score">([-\d.]+)</span>', strip)]
    assert shown == [round(float(s), 1) for s in scores]


def test_gate_fraction_equals_the_stored_flags(made, tmp_path):
    flags = store.read_group(made["scores"], "gated")[0]["is_ood"]
    gate = made["summary"]["gates"][0]
    assert gate["group"] == "gated" and gate["n_ood"] == int(flags.sum()) and gate["ood_fraction"] == flags.mean()
    assert "s.h5:in (" in gate["threshold_reference"] and f"{int(flags.sum()):,} of {len(flags):,}" in made["html"]
    # a gated group of the file that the report does not compare still has its gate shown
    summary = run_json("report", made["scores"], "--in", "in", "--ood", "ood", "--out", tmp_path / "r.html",
                       "--thumbnails", "0", "--ci", "0")
    assert [g["group"] for g in summary["gates"]] == ["gated"] and 'id="gate"' in (tmp_path / "r.html").read_text()


def test_a_group_gated_by_an_older_oodflow_is_labelled_with_its_rule_not_recomputed():
    from ood_flow.report.provenance import gate_of

    arrays = {"is_ood": np.array([True, False, False, False])}
    old = gate_of("g", arrays, {"threshold": 1.0, "max_ood_fraction": 0.1})  # flagged 25 % > 10 %: no verdict given
    assert "decision" not in old and old["rule"].startswith("old rule")
    new = gate_of("g", arrays, {"max_ood_fraction": 0.1, "gate_rule": "batch test",
                                "gate_decision": {"passed": True, "p_value": 0.4, "alpha": 0.01}})
    assert new["decision"] == "pass" and new["p_value"] == 0.4  # the stored decision, whatever the fraction


def test_existing_page_is_kept_without_overwrite(made, tmp_path):
    before = made["page"].read_bytes()
    one_line_error(run("report", made["scores"], "--in", "in", "--ood", "ood", "--out", made["page"], code=1),
                   "exists", "--overwrite")
    assert made["page"].read_bytes() == before
    out = tmp_path / "again.html"
    out.write_text("<!doctype html><html><body>an older page</body></html>")
    run("report", made["scores"], "--in", "in", "--ood", "ood", "--out", out, "--overwrite", "--quiet")
    assert out.read_text().startswith("<!DOCTYPE html>") and "an older page" not in out.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["again.html"]  # no temporary or lock left
    notes = tmp_path / "notes.html"
    notes.write_text("my notes, not a page")
    one_line_error(run("report", made["scores"], "--in", "in", "--ood", "ood", "--out", notes, "--overwrite", code=1),
                   "not an HTML page")
    assert notes.read_text() == "my notes, not a page"


@pytest.mark.parametrize("args, code, fragments", [
    (("--ood", "mnist"), 1, ("no group 'mnist'", "in, ood, gated")),
    (("--ood", "ood", "--score", "waic"), 1, ("no score 'waic'", "log_likelihood")),
    (("--ood", "ood", "--out", "r.pdf"), 2, ("r.pdf", ".html")),
    (("--ood", "ood", "--out", "missing/r.html"), 1, ("no such folder",)),
    (("--ood", "ood", "--ci", "1.5"), 2, ("--ci",)),
])
def test_bad_input_is_one_line(made, tmp_path, monkeypatch, args, code, fragments):
    monkeypatch.chdir(tmp_path)
    args = args if "--out" in args else (*args, "--out", "r.html")
    one_line_error(run("report", made["scores"], "--in", "in", *args, code=code), *fragments)
    assert list(tmp_path.iterdir()) == []


def _synthetic(path, groups):
    rng = np.random.default_rng(0)
    for name, attrs in groups.items():
        store.write_group(path, name, {"log_likelihood": rng.normal(0, 1, 30), "id": np.arange(30)}, attrs)
    return path


def test_groups_of_different_models_warn_and_name_each_model(tmp_path):
    scores = _synthetic(tmp_path / "s.h5", {"in": {"model": "/x/a.pt", "model_sha256": "a" * 64},
                                            "ood": {"model": "/x/b.pt", "model_sha256": "b" * 64}})
    result = run("report", scores, "--in", "in", "--ood", "ood", "--out", tmp_path / "r.html", "--thumbnails", "0")
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "2 different models" in warning[0]
    assert "in <- a.pt" in warning[0] and "ood <- b.pt" in warning[0]
    html = (tmp_path / "r.html").read_text()
    assert "2 different models" in html and "/x/a.pt is no longer there" in html


def test_images_that_cannot_be_found_are_one_line_on_the_page(tmp_path):
    scores = _synthetic(tmp_path / "s.h5", {"in": {"source": str(tmp_path / "gone.npz") + ":x"},
                                            "ood": {"source": "mnist:test from /nowhere/t10k-images-idx3-ubyte.gz"}})
    result = run("report", scores, "--in", "in", "--ood", "ood", "--out", tmp_path / "r.html", "--data-dir",
                 tmp_path / "empty")
    notes = [line for line in result.stderr.splitlines() if line.startswith("note: images of")]
    assert len(notes) == 2 and all("\n" not in n for n in notes)
    html = (tmp_path / "r.html").read_text()
    assert html.count('<p class="missing">images of') == 2 and "<img" not in html


def test_help_says_what_the_page_holds():
    text = " ".join(run("report", "--help").stdout.split())
    assert "self-contained HTML page" in text and "evaluate --json" in text


def test_core_api_without_the_cli(made, tmp_path):
    result = write_report(made["scores"], "in", ["ood"], tmp_path / "r.html", bootstrap=None, thumbnails=0)
    html = result.out.read_text()
    assert result.bytes == len(html.encode()) and "(not recorded: called from Python)" in html
    assert 'class="ci"' not in html
    assert result.evaluation["ood"]["ood"]["auroc"] == page_metrics(html)[0]["log_likelihood", "ood"]["auroc"]


def test_thumbnails_of_image_files_and_a_line_once_they_are_gone(made, tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(6):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(folder / f"i{k}.png")
    scores = tmp_path / "s.h5"
    for name in ("a", "b"):
        run("score", folder, "--model", made["model"], "--out", scores, "--name", name, "--quiet")
    summary = run_json("report", scores, "--in", "a", "--ood", "b", "--out", tmp_path / "r.html", "--thumbnails", "4")
    assert summary["thumbnails"] == 8 and summary["missing_images"] == []
    for k in range(6):
        (folder / f"i{k}.png").unlink()
    summary = run_json("report", scores, "--in", "a", "--ood", "b", "--out", tmp_path / "r2.html")
    assert summary["thumbnails"] == 0 and len(summary["missing_images"]) == 2
    assert "6 of the 6 image files are no longer there" in summary["missing_images"][0]


def test_gate_decision_follows_the_limit_recorded_by_score(made, tmp_path):
    scores = tmp_path / "s.h5"
    scores.write_bytes(made["scores"].read_bytes())
    for name, limit in (("strict", "0.0"), ("lenient", "1.0")):
        args = ["score", made["dir"] / "ood.npz", "--model", made["model"], "--out", scores, "--name", name,
                "--reference", f"{scores}:in", "--max-ood-fraction", limit, "--quiet"]
        assert runner.invoke(app, [str(a) for a in args]).exit_code in (0, 3)  # 3: the gate failed (after saving)
    gates = {g["group"]: g for g in run_json("report", scores, "--in", "in", "--ood", "ood", "--out",
                                             tmp_path / "r.html", "--thumbnails", "0", "--ci", "0")["gates"]}
    page = (tmp_path / "r.html").read_text()
    assert gates["strict"]["max_ood_fraction"] == 0.0 and gates["lenient"]["decision"] == "pass"
    for name in ("strict", "lenient"):  # the decision score stored, never recomputed by the report
        stored = store.read_group(scores, name)[1]["gate_decision"]
        assert gates[name]["decision"] == ("pass" if stored["passed"] else "fail")
        assert gates[name]["p_value"] == stored["p_value"] and f"p = {stored['p_value']:.2g}, alpha 0.01" in page
    assert "gated" in gates and "decision" not in gates["gated"]  # scored without a limit


def test_long_group_names_leave_every_figure_whole(monkeypatch):
    """With long group names the histogram's legend ran off both sides of its figure and the ROC and PR axes shrank
    to a fraction of theirs (a legend inside them a line per name); names are wrapped in legends now."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from ood_flow.report import figures

    drawn = []

    def measure(fig):
        canvas = FigureCanvasAgg(fig)  # the report's figures have no canvas of their own until written
        canvas.draw()
        box, (width, height) = fig.get_tightbbox(canvas.get_renderer()), fig.get_size_inches()
        beyond = {"left": -box.x0, "bottom": -box.y0, "right": box.x1 - width, "top": box.y1 - height}
        axes = min(ax.get_position().width for ax in fig.axes)
        drawn.append(({k: round(v, 2) for k, v in beyond.items() if v > 0.01}, round(axes, 2)))
        return "<svg></svg>"

    monkeypatch.setattr(figures, "_svg", measure)
    rng = np.random.default_rng(0)
    in_name = "fashionmnist-test-held-out-evaluation-split-from-the-long-running-pipeline"
    ood = {"mnist-test-out-of-distribution-probe-set-number-one": rng.normal(1, 1, 200),
           "x" * 70: rng.normal(2, 1, 200)}
    values = rng.normal(0, 1, 200)
    figures.histogram_svg(in_name, values, ood, "log_likelihood", -1.6, 0.95)
    figures.roc_svg(values, ood, {name: 0.3 for name in ood})
    figures.pr_svg(values, ood, {name: 0.4 for name in ood})
    assert [beyond for beyond, _ in drawn] == [{}, {}, {}]
    assert all(width > 0.6 for _, width in drawn), drawn  # each plot keeps most of its figure's width
