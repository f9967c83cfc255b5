"""oodflow in a shell pipeline: several SOURCEs, paths on stdin (`-`, `-0`) and in `--files-from`, one group in
the order given with the same ids and scores as from a folder; stdout holds data or the summary, never both;
tables fit the width."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from cli_helpers import TRAIN_SMALL, image_npz, one_line_error, run, run_json, runner
from ood_flow.cli.main import app


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny model of 8x8 images (with its calibration) and a folder of 8 of them in two subfolders."""
    d = tmp_path_factory.mktemp("pipes")
    image_npz(d / "train.npz", n=200, seed=0)
    run("train", "--data", d / "train.npz", "--out", d / "m.pt", *TRAIN_SMALL, "--calibration-fraction", "0.2")
    images = np.load(image_npz(d / "new.npz", n=8, seed=3))["x"]
    for i, image in enumerate(images):
        (d / "imgs" / f"part{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(d / "imgs" / f"part{i % 2}" / f"{i}.png")
    return d


def _rows(stdout: str) -> dict[str, str]:
    lines = stdout.strip().splitlines()
    assert lines[0].startswith("id\t")
    return {line.split("\t")[0]: line.split("\t", 1)[1] for line in lines[1:]}


def test_a_list_on_stdin_scores_as_the_folder_does_in_the_order_given(setup, monkeypatch):
    monkeypatch.chdir(setup)
    folder = _rows(run("score", "imgs", "--model", "m.pt", "--quiet").stdout)
    listed = sorted(folder, reverse=True)  # another order than the folder's
    result = runner.invoke(app, ["score", "-", "--model", "m.pt", "--name", "batch", "--quiet"],
                           input="\n".join(listed) + "\n")
    assert result.exit_code == 0, result.stderr
    rows = _rows(result.stdout)
    assert list(rows) == listed and rows == {k: folder[k] for k in listed}  # same ids, same scores, given order
    nul = runner.invoke(app, ["score", "-", "-0", "--model", "m.pt", "--name", "batch", "--quiet"],
                        input="\0".join(listed) + "\0")
    assert _rows(nul.stdout) == rows
    alone = _rows(run("score", listed[0], "--model", "m.pt", "--quiet").stdout)
    assert alone == {listed[0]: folder[listed[0]]}


def test_several_sources_and_files_from_make_one_named_group(setup, tmp_path, monkeypatch):
    monkeypatch.chdir(setup)
    (tmp_path / "list.txt").write_text("imgs/part1/1.png\n\nimgs/part0/0.png\n")
    summary = run_json("score", "imgs/part0", "imgs/part1/3.png", "--files-from", tmp_path / "list.txt",
                       "--model", "m.pt", "--name", "mixed", "--out", tmp_path / "s.h5", "--quiet")
    assert summary["group"] == "mixed" and summary["n"] == 4 + 1 + 2
    from ood_flow import store

    ids = list(store.read_group(tmp_path / "s.h5", "mixed")[0]["id"])
    assert ids == [f"imgs/part0/{i}.png" for i in (0, 2, 4, 6)] + ["imgs/part1/3.png", "imgs/part1/1.png",
                                                                    "imgs/part0/0.png"]


def test_list_mistakes_are_one_line(setup, tmp_path, monkeypatch):
    monkeypatch.chdir(setup)
    one_line_error(run("score", "imgs/part0", "imgs/part1", "--model", "m.pt", code=2), "--name")
    one_line_error(run("score", "imgs/part0", "new.npz", "--model", "m.pt", "--name", "x", code=1), "new.npz",
                   "on its own")
    one_line_error(run("score", "imgs/part0", "gone.png", "--model", "m.pt", "--name", "x", code=1),
                   "no such file: gone.png", "--skip-invalid")
    one_line_error(run("score", "--model", "m.pt", code=2), "give a SOURCE")
    empty = runner.invoke(app, ["score", "-", "--model", "m.pt"], input="")
    assert empty.exit_code == 2 and "no paths were given on standard input" in empty.stderr
    one_line_error(run("score", "--files-from", tmp_path / "none.txt", "--model", "m.pt", code=1), "none.txt")


def test_a_listed_name_that_is_no_file_is_said_to_be_missing_not_an_unknown_dataset(setup, tmp_path, monkeypatch):
    """`echo x | oodflow score -` once said "unknown dataset 'x'": a listed path is never a dataset name."""
    monkeypatch.chdir(setup)
    for listed in ("x\n", "imgs/part0/0.png\nmnist\n"):
        result = runner.invoke(app, ["score", "-", "--model", "m.pt", "--name", "b"], input=listed)
        assert result.exit_code == 1 and "unknown dataset" not in result.stderr
        one_line_error(result, "no such file or folder", "listed on standard input", "--skip-invalid")
    (tmp_path / "list.txt").write_text("imgs/part0/0.png\ngone\n")
    one_line_error(run("score", "--files-from", tmp_path / "list.txt", "--model", "m.pt", "--name", "b", code=1),
                   "'gone'", f"in --files-from {tmp_path / 'list.txt'}")
    alone = runner.invoke(app, ["score", "-", "--model", "m.pt", "--skip-invalid"], input="x\n")  # nothing else
    assert alone.exit_code == 1 and "pass --skip-invalid" not in one_line_error(alone, "'x'")
    gate = run_json("score", "--files-from", tmp_path / "list.txt", "--model", "m.pt", "--name", "b", "--skip-invalid",
                    "--max-ood-fraction", "0.5", "--quiet")["gate"]  # among others, skipped as a file
    assert gate["n"] == 2 and gate["n_skipped"] == 1 and gate["skipped_files"][0]["path"] == "gone"


def test_a_missing_file_with_skip_invalid_counts_as_ood_in_the_gate(setup, monkeypatch):
    monkeypatch.chdir(setup)
    gate = run_json("score", "imgs", "gone.png", "--model", "m.pt", "--name", "x", "--skip-invalid",
                    "--max-ood-fraction", "0.5", "--quiet")["gate"]
    assert gate["n"] == 9 and gate["n_skipped"] == 1 and gate["skipped_files"][0]["path"] == "gone.png"


def test_a_real_shell_pipe_from_find(setup):
    """`find ... -print0 | oodflow score - -0`: the ids are find's paths, the rows on stdout and nothing else."""
    cmd = (f"find imgs -name '*.png' -print0 | {sys.executable} -m ood_flow score - -0 --model m.pt "
           "--name incoming --max-ood-fraction 0.5 --flags")
    result = subprocess.run(cmd, shell=True, cwd=setup, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "id\tis_ood\tlog_likelihood\tp_value" and len(lines) == 9
    assert sorted(line.split("\t")[0] for line in lines[1:]) == sorted(
        f"imgs/part{i % 2}/{i}.png" for i in range(8))
    assert "evidence that more than 50.0 % are OOD" in result.stderr  # the decision: on stderr beside rows


def test_the_summary_goes_to_stdout_without_rows_and_written_to_messages_to_stderr(setup, tmp_path, monkeypatch):
    monkeypatch.chdir(setup)
    plain = run("score", "imgs", "--model", "m.pt", "--max-ood-fraction", "0.5", "--quiet")
    assert "evidence that more than 50.0 % are OOD" in plain.stdout and "\t" not in plain.stdout
    run("score", "imgs", "--model", "m.pt", "--out", tmp_path / "s.h5", "--name", "in", "--quiet")
    run("score", "new.npz", "--model", "m.pt", "--out", tmp_path / "s.h5", "--name", "ood", "--quiet")
    report = run("report", tmp_path / "s.h5", "--in", "in", "--ood", "ood", "--out", tmp_path / "r.html",
                 "--thumbnails", "0", "--ci", "0")
    assert report.stdout == "" and "report written to" in report.stderr
    evaluate = run("evaluate", tmp_path / "s.h5", "--in", "in", "--ood", "ood", "--plot", tmp_path / "h.png")
    assert "histogram written to" in evaluate.stderr and "written to" not in evaluate.stdout


@pytest.mark.parametrize("columns", [60, 80, 120])
def test_evaluate_tables_fit_the_width_and_cut_nothing(setup, tmp_path, monkeypatch, columns):
    monkeypatch.chdir(setup)
    run("score", "imgs", "--model", "m.pt", "--out", tmp_path / "s.h5", "--name", "fashion-in-distribution",
        "--quiet")
    run("score", "new.npz", "--model", "m.pt", "--out", tmp_path / "s.h5", "--name", "a-long-ood-group-name",
        "--quiet")
    result = runner.invoke(app, ["evaluate", str(tmp_path / "s.h5"), "--in", "fashion-in-distribution", "--ood",
                                 "a-long-ood-group-name", "--ci", "0.9", "--bootstrap", "50"],
                           env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= columns and "…" not in result.stdout
    first_column = "".join(_first_cell(line) for line in lines if "│" in line)
    assert first_column == "a-long-ood-group-name"  # folded over lines, whole


def _first_cell(row: str) -> str:
    """The first cell of a table row, with or without the table's outer border."""
    return row.split("│")[1 if row.startswith("│") else 0].strip()


def test_at_80_columns_a_group_name_stays_whole_when_dropping_the_border_makes_room(setup, tmp_path, monkeypatch):
    monkeypatch.chdir(setup)
    for name, source in (("in", "imgs"), ("notmnist-test-all", "new.npz")):
        run("score", source, "--model", "m.pt", "--out", tmp_path / "s.h5", "--name", name, "--quiet")
    result = runner.invoke(app, ["evaluate", str(tmp_path / "s.h5"), "--in", "in", "--ood", "notmnist-test-all",
                                 "--ci", "0.9", "--bootstrap", "50"], env={"COLUMNS": "80"})
    rows = [line for line in result.stdout.splitlines() if "│" in line]
    assert result.exit_code == 0 and max(len(line.rstrip()) for line in result.stdout.splitlines()) <= 80
    assert [_first_cell(row) for row in rows] == ["notmnist-test-all", ""]  # the name, then its intervals' line
    assert not rows[0].startswith("│")  # no outer border: it made the room


def test_brackets_in_paths_and_names_are_printed_as_they_are(setup, tmp_path, monkeypatch):
    """Paths, sources and group names go to the terminal as text: a ``[...]`` in one is not rich markup. A folder
    path holding ``[/y]`` made every message about it raise (exit 1, nothing scored), and ``[red]`` vanished."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(setup / "imgs" / "part0", tmp_path / "run[red]")
    shutil.copytree(setup / "imgs" / "part1", tmp_path / "x[" / "y]")  # the path x[/y]
    model = setup / "m.pt"
    scored = run("score", "run[red]", "--model", model, "--out", "o[bold].h5")
    assert "run[red]: 4 samples" in scored.stdout and "-> o[bold].h5" in scored.stdout  # the summary
    assert "4/4 run[red]" in scored.stderr  # the progress line
    assert "4/4 x[/y]" in run("score", "x[/y]", "--model", model).stderr
    named = run("score", "x[/y]", "--model", model, "--out", "o[bold].h5", "--name", "[bold]g")
    assert "[bold]g: 4 samples" in named.stdout and "4/4 [bold]g" in named.stderr
    table = run("evaluate", "o[bold].h5", "--in", "run[red]", "--ood", "[bold]g").stdout
    assert "in = run[red]" in table and "[bold]g" in table
    assert "[bold]g" in run("info", "o[bold].h5").stdout


def test_a_group_name_that_cannot_be_written_is_refused_before_any_work(setup, tmp_path, monkeypatch):
    monkeypatch.chdir(setup)
    result = runner.invoke(app, ["score", "imgs", "--model", "m.pt", "--out", str(tmp_path / "s.h5"), "--name", "a/b"])
    assert result.exit_code == 2  # the user's option: a usage error
    one_line_error(result, "--name: invalid group name 'a/b'")  # the only line: no progress bar, nothing scored first
    assert not (tmp_path / "s.h5").exists()
    printed = runner.invoke(app, ["score", "imgs", "--model", "m.pt", "--name", "a/b"])  # the same without --out
    assert printed.exit_code == 2 and printed.stdout == ""


def test_the_command_hides_only_the_compilers_own_deprecation_warnings():
    """``train --compile`` printed a FutureWarning per lowering from inside torch's inductor, and a line from torch's
    C++-extension logger about CUDA on a CPU-only machine; the command hides those and nothing else (run in a child
    process: the filters are process-wide)."""
    code = """
import logging, warnings
from ood_flow.cli import common
common.quiet_compiler_warnings()
extensions = logging.getLogger("torch.utils.cpp_extension")
extensions.warning("No CUDA runtime is found, using CUDA_HOME='%s'", "/usr/local")
extensions.warning("Error checking compiler version for %s", "c++")
logging.getLogger("torch.other").warning("No CUDA runtime is found, using CUDA_HOME='%s'", "/usr/local")
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("default")
    common.quiet_compiler_warnings()
    for module in ("torch._inductor.lowering", "torch._inductor", "torch.nn.functional", "torch._inductorx"):
        warnings.warn_explicit("deprecated", FutureWarning, "x.py", 1, module=module, registry={})
    warnings.warn_explicit("other", UserWarning, "x.py", 1, module="torch._inductor.lowering", registry={})
print(sorted((str(w.category.__name__), w.message.args[0], w.filename) for w in seen))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stderr.splitlines() == ["Error checking compiler version for c++",
                                       "No CUDA runtime is found, using CUDA_HOME='/usr/local'"]  # the other logger's
    assert out.stdout.strip() == str(sorted([("FutureWarning", "deprecated", "x.py")] * 2 + [("UserWarning", "other",
                                                                                              "x.py")]))


def test_a_file_name_with_a_tab_or_newline_stays_one_field_of_one_row(setup, tmp_path, monkeypatch):
    """TSV rows were split by a newline in a file name and gained a column from a tab; ids are escaped now (``\\t``,
    ``\\n``, ``\\r``, ``\\\\``), one row per sample, and unescape to the ids of ``--json``."""
    monkeypatch.chdir(tmp_path)
    image = np.load(setup / "new.npz")["x"][0]
    names = ["a\tb.png", "c\nd.png", "e\\f.png", "g h.png"]
    (tmp_path / "odd").mkdir()
    for name in names:
        Image.fromarray(image).save(tmp_path / "odd" / name)
    ids = [s["id"] for s in run_json("score", "odd", "--model", setup / "m.pt", "--quiet")["samples"]]
    unescape = {"\\t": "\t", "\\n": "\n", "\\r": "\r", "\\\\": "\\"}

    def fields(stdout: str, columns: int) -> list[str]:
        lines = stdout.rstrip("\n").split("\n")
        assert len(lines) == 1 + len(names) and all(line.count("\t") == columns - 1 for line in lines), stdout
        return [re.sub(r"\\[tnr\\]", lambda m: unescape[m[0]], line.split("\t")[0]) for line in lines[1:]]

    assert sorted(ids) == sorted(f"odd/{n}" for n in names)
    assert fields(run("score", "odd", "--model", setup / "m.pt", "--quiet").stdout, 5) == ids
    assert fields(run("score", "odd", "--model", setup / "m.pt", "--flags", "--quiet").stdout, 4) == ids


def test_one_image_is_one_sample_in_the_summary(setup, monkeypatch):
    monkeypatch.chdir(setup)
    printed = run("score", "imgs/part0/0.png", "--model", "m.pt")
    assert "\n0: 1 sample, mean" in printed.stderr  # the group is named after the file; not "1 samples"
    assert ": 4 samples, mean" in run("score", "imgs/part0", "--model", "m.pt").stderr


def test_json_output_is_strict_json_with_null_where_a_number_is_not_finite(tmp_path):
    """An infinite threshold was printed as ``-Infinity``, which is not JSON: ``jq`` refused the whole document."""
    from ood_flow import jsontext, store

    path = tmp_path / "s.h5"
    store.write_group(path, "in", {"log_likelihood": np.array([-np.inf] * 3 + [1.0, 2.0, 3.0]), "id": np.arange(6)}, {})
    store.write_group(path, "ood", {"log_likelihood": np.array([-np.inf, 0.0, 1.0]), "id": np.arange(3)}, {})
    printed = run("evaluate", path, "--in", "in", "--ood", "ood", "--json").stdout

    def refuse(constant):
        raise AssertionError(f"not JSON: {constant}")

    report = json.loads(printed, parse_constant=refuse)
    assert report["ood"]["ood"]["threshold"] is None and report["ood"]["ood"]["auroc"] == pytest.approx(5 / 9)
    run("report", path, "--in", "in", "--ood", "ood", "--out", tmp_path / "r.html", "--thumbnails", "0", "--quiet")
    assert 'data-metric="threshold" data-value="null"' in (tmp_path / "r.html").read_text()  # as --json says
    nested = {"a": [np.float32(np.nan), float("inf"), 1.5], "b": np.array([2.0, -np.inf]), "c": (np.int64(3), "x")}
    assert json.loads(jsontext.dumps(nested)) == {"a": [None, None, 1.5], "b": [2.0, None], "c": [3, "x"]}


def _shell_env(buffered: bool) -> dict:
    """The environment of a command typed in a shell: standard output buffered unless PYTHONUNBUFFERED is set
    (then each write reaches the file at once), the two ways a full or closed output shows up."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return env if buffered else {**env, "PYTHONUNBUFFERED": "1"}


SCORE_IMGS = [sys.executable, "-m", "ood_flow", "score", "imgs", "--model", "m.pt", "--quiet"]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
@pytest.mark.parametrize("buffered", [True, False])
def test_a_full_standard_output_is_one_line_naming_the_reason_and_exit_1(setup, buffered):
    """`oodflow score ... > /dev/full`: the system's refusal as one line (the reason, not a Python class name), and
    no second complaint from the interpreter's flush at exit (which would make the exit code 120)."""
    with open("/dev/full", "w") as full:
        result = subprocess.run(SCORE_IMGS, cwd=setup, stdout=full, stderr=subprocess.PIPE, text=True, timeout=300,
                                env=_shell_env(buffered))
    assert result.returncode == 1
    assert result.stderr == f"error: {os.strerror(28)} (errno 28)\n"


@pytest.mark.parametrize("buffered", [True, False])
def test_a_reader_that_leaves_early_stops_the_command_quietly_with_sigpipes_code(setup, buffered):
    """`oodflow score imgs/ | head -1` where head has gone: no message, exit 141 (128 + SIGPIPE), as a Unix tool that
    SIGPIPE stops; here the pipe's reading end is closed before the command writes anything."""
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run(SCORE_IMGS, cwd=setup, stdout=write, stderr=subprocess.PIPE, text=True, timeout=300,
                                env=_shell_env(buffered))
    finally:
        os.close(write)
    assert result.returncode == 141 and result.stderr == ""
