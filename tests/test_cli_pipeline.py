"""train -> score -> evaluate through the CLI: exit codes, stdout JSON, stderr messages, bad input."""

from __future__ import annotations

import json
import os

import click
import h5py
import numpy as np
import pytest
import torch
import typer

from cli_helpers import TRAIN_SMALL, image_npz, one_line_error, run, run_json
from ood_flow.cli.main import app
from ood_flow.data import vision


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained on 8x8 images, and sources to score."""
    d = tmp_path_factory.mktemp("pipeline")
    src = image_npz(d / "in.npz", n=48)
    ood = image_npz(d / "ood.npz", n=30, seed=1, bright=0.05)
    summary = run_json("train", "--data", src, "--out", d / "m.pt", *TRAIN_SMALL)
    return d, src, ood, summary


def _commands(group: click.Group, path: tuple[str, ...] = ()):
    """Every (sub)command of the application, as (argv path, click command)."""
    for name, command in group.commands.items():
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


def test_every_command_and_option_has_help_that_rich_can_wrap():
    commands = list(_commands(typer.main.get_command(app)))
    assert "train" in [path[0] for path, _ in commands]
    for path, command in commands:
        assert "Usage" in run(*path, "--help").stdout
        assert command.help, f"oodflow {' '.join(path)} has no help text"
        hard_breaks = [p for p in command.help.split("\n\n") if "\n" in p]
        assert not hard_breaks, f"oodflow {' '.join(path)}: a line break inside a paragraph: {hard_breaks[0][:60]!r}"
        bare = [p.name for p in command.params if isinstance(p, click.Option) and not p.help]
        assert not bare, f"oodflow {' '.join(path)}: options without help: {bare}"
    assert "higher = more in-distribution" in run("--help").stdout


def test_train_writes_model_checkpoint_and_json_summary(trained):
    d, _, _, summary = trained
    assert summary["family"] == "realnvp" and summary["steps"] >= 1 and summary["val_bpd"] > 0
    assert (d / "m.pt").exists() and (d / "m.ckpt.pt").exists()


def test_train_without_out_names_the_model_after_data_and_family(trained, tmp_path, monkeypatch):
    _, src, _, _ = trained
    monkeypatch.chdir(tmp_path)
    summary = run_json("train", "--data", src, *TRAIN_SMALL)
    assert summary["model"] == "in-realnvp.pt" and (tmp_path / "in-realnvp.pt").exists()
    before = (tmp_path / "in-realnvp.pt").read_bytes()
    one_line_error(run("train", "--data", src, *TRAIN_SMALL, code=1), "in-realnvp.pt exists")
    assert (tmp_path / "in-realnvp.pt").read_bytes() == before


def test_train_refuses_to_replace_a_model_and_resume_continues(trained, tmp_path):
    d, src, _, _ = trained
    result = run("train", "--data", src, "--out", d / "m.pt", *TRAIN_SMALL, code=1)
    one_line_error(result, "exists", "--resume", "--overwrite")
    target = tmp_path / "r.pt"
    first = run_json("train", "--data", src, "--out", target, *TRAIN_SMALL)
    more = run_json("train", "--data", src, "--out", target, "--resume", "--epochs", "2", "--quiet")
    assert more["steps"] == 2 * first["steps"]
    result = run("train", "--data", src, "--out", target, "--resume", "--channels", "8", "--quiet", code=2)
    one_line_error(result, "the architecture cannot change", "--channels 4, not 8")


def test_score_creates_groups_with_provenance_and_refuses_duplicates(trained):
    d, src, ood, _ = trained
    scores = d / "s.h5"
    summary = run_json("score", src, "--model", d / "m.pt", "--out", scores, "--quiet")
    assert summary["group"] == "in" and summary["n"] == 48 and summary["mean_bits_per_dim"] > 0
    run("score", ood, "--model", d / "m.pt", "--out", scores, "--name", "far", "--quiet")
    with h5py.File(scores) as f:
        assert list(f) == ["far", "in"] or set(f) == {"in", "far"}
        g = f["in"]
        assert {"log_likelihood", "bits_per_dim", "log_prior", "log_det", "id", "label"} <= set(g)
        assert len(g.attrs["model_sha256"]) == 64 and g.attrs["seed"] == 0 and "source" in g.attrs
        ll = g["log_likelihood"][()]
        np.testing.assert_allclose(ll, g["log_prior"][()] + g["log_det"][()] - 64 * np.log(256))
        np.testing.assert_allclose(g["bits_per_dim"][()], -ll / (64 * np.log(2)))
    before = scores.read_bytes()
    result = run("score", src, "--model", d / "m.pt", "--out", scores, "--quiet", code=1)
    one_line_error(result, "exists; pass --overwrite")
    assert scores.read_bytes() == before


def test_score_without_out_prints_every_sample_and_saves_nothing(trained, tmp_path):
    d, src, _, _ = trained
    run("score", src, "--model", d / "m.pt", "--out", tmp_path / "s.h5", "--quiet")
    with h5py.File(tmp_path / "s.h5") as f:
        stored = {k: f[f"in/{k}"][()] for k in ("log_likelihood", "bits_per_dim")}
    result = run("score", src, "--model", d / "m.pt")
    header, *rows = result.stdout.splitlines()
    assert header.split("\t") == ["id", "log_likelihood", "bits_per_dim", "log_prior", "log_det"]
    table = np.array([[float(v) for v in row.split("\t")[1:3]] for row in rows])
    assert len(rows) == 48 and rows[0].split("\t")[0] == "0"
    np.testing.assert_allclose(table[:, 0], stored["log_likelihood"], rtol=1e-9)
    np.testing.assert_allclose(table[:, 1], stored["bits_per_dim"], rtol=1e-9)
    assert "not saved" in result.stderr and "in" in result.stderr
    samples = run_json("score", src, "--model", d / "m.pt", "--quiet", "--limit", "3")["samples"]
    assert [s["log_likelihood"] for s in samples] == pytest.approx(stored["log_likelihood"][:3].tolist(), rel=1e-12)
    assert sorted(os.listdir(tmp_path)) == ["s.h5"]


def test_scores_are_deterministic_and_independent_of_batch_size(trained, tmp_path):
    d, src, _, _ = trained
    run("score", src, "--model", d / "m.pt", "--out", tmp_path / "a.h5", "--batch-size", "7", "--quiet")
    run("score", src, "--model", d / "m.pt", "--out", tmp_path / "b.h5", "--limit", "10", "--quiet")
    with h5py.File(tmp_path / "a.h5") as a, h5py.File(tmp_path / "b.h5") as b:
        np.testing.assert_array_equal(a["in/log_likelihood"][:10], b["in/log_likelihood"][()])


def test_evaluate_json_table_and_gate(trained):
    d, src, ood, _ = trained
    scores = d / "eval.h5"
    run("score", src, "--model", d / "m.pt", "--out", scores, "--quiet")
    run("score", ood, "--model", d / "m.pt", "--out", scores, "--quiet")
    result = run("evaluate", scores, "--in", "in", "--ood", "ood", "--json")
    report = json.loads(result.stdout)
    assert set(report["ood"]["ood"]) >= {"auroc", "aupr_in", "aupr_out", "fpr95", "threshold"}
    assert result.stderr == ""
    table = run("evaluate", scores, "--in", "in", "--ood", "ood").stdout
    assert "AUROC" in table and "ood" in table
    auroc = report["ood"]["ood"]["auroc"]
    run("evaluate", scores, "--in", "in", "--ood", "ood", "--min-auroc", str(auroc - 0.01))
    result = run("evaluate", scores, "--in", "in", "--ood", "ood", "--min-auroc", str(auroc + 0.01), code=3)
    assert "AUROC below --min-auroc" in result.stderr
    one_line_error(run("evaluate", scores, "--in", "in", "--ood", "svhn", code=1), "no group 'svhn'", "in, ood")


def test_corrupt_images_fail_with_the_file_name_or_are_skipped(trained, tmp_path):
    from PIL import Image

    d, _, _, _ = trained
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(folder / f"{i}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (folder / "notes.txt").write_text("ignored")
    one_line_error(run("score", folder, "--model", d / "m.pt", "--out", tmp_path / "s.h5", "--quiet", code=1),
                   "broken.png")
    assert not (tmp_path / "s.h5").exists()
    result = run("score", folder, "--model", d / "m.pt", "--out", tmp_path / "s.h5", "--skip-invalid", "--json")
    assert json.loads(result.stdout)["n"] == 3 and "broken.png" in result.stderr
    with h5py.File(tmp_path / "s.h5") as f:
        assert "broken.png" in f["imgs"].attrs["skipped"]


def test_bad_model_files_fail_in_one_line(trained, tmp_path):
    d, src, _, _ = trained
    (tmp_path / "cut.pt").write_bytes((d / "m.pt").read_bytes()[:500])
    one_line_error(run("score", src, "--model", tmp_path / "cut.pt", "--out", tmp_path / "s.h5", code=1), "cut.pt")

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"format": "oodflow-model", "x": Evil()}, tmp_path / "evil.pt")
    one_line_error(run("score", src, "--model", tmp_path / "evil.pt", "--out", tmp_path / "s.h5", code=1),
                   "not an oodflow model file", "not loaded")
    assert not (tmp_path / "pwned").exists()
    one_line_error(run("score", src, "--model", tmp_path / "none.pt", "--out", tmp_path / "s.h5", code=1),
                   "none.pt")


def test_shape_and_channel_mismatches_name_both_shapes(trained, tmp_path):
    d, _, _, _ = trained
    big = tmp_path / "big.npz"
    np.savez(big, x=np.zeros((4, 16, 16), np.uint8))
    one_line_error(run("score", big, "--model", d / "m.pt", "--out", tmp_path / "s.h5", code=1),
                   "1x16x16", "1x8x8", "--resize")
    rgb = tmp_path / "rgb.npz"
    np.savez(rgb, x=np.zeros((4, 8, 8, 3), np.uint8))
    one_line_error(run("score", rgb, "--model", d / "m.pt", "--out", tmp_path / "s.h5", code=1), "3x8x8", "1x8x8")
    run("score", big, "--model", d / "m.pt", "--out", tmp_path / "s.h5", "--resize", "--quiet")


def test_foreign_score_files_and_missing_paths(trained, tmp_path):
    d, src, _, _ = trained
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = [1, 2, 3]
    one_line_error(run("evaluate", tmp_path / "foreign.h5", "--in", "a", "--ood", "b", code=1), "not an oodflow")
    one_line_error(run("score", tmp_path / "missing", "--model", d / "m.pt", "--out", tmp_path / "s.h5", code=1),
                   "missing")
    (tmp_path / "empty").mkdir()
    one_line_error(run("score", tmp_path / "empty", "--model", d / "m.pt", "--out", tmp_path / "s.h5", code=1), "empty")


def test_unknown_and_absent_datasets(trained, tmp_path, monkeypatch):
    d, _, _, _ = trained
    one_line_error(run("score", "svhnn", "--model", d / "m.pt", "--out", tmp_path / "s.h5", code=1),
                   "unknown dataset", "fashionmnist")

    def offline(root, split):
        raise OSError("network unreachable")

    monkeypatch.setitem(vision.DOWNLOADERS, "mnist", offline)
    one_line_error(run("score", "mnist:test", "--model", d / "m.pt", "--out", tmp_path / "s.h5",
                       "--data-dir", tmp_path / "root", code=1),
                   "t10k-images-idx3-ubyte.gz", "MNIST/raw")


def test_nan_in_a_table_is_an_error(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,2\n3,nan\n5,6\n")
    one_line_error(run("train", "--data", tmp_path / "t.csv", "--out", tmp_path / "m.pt", code=1), "t.csv", "nan")
    assert not (tmp_path / "m.pt").exists()


def test_usage_errors_exit_2(trained, tmp_path):
    d, src, _, _ = trained
    result = run("train", "--data", src, "--out", tmp_path / "m.pt", "--mask", "diagonal", code=2)
    assert "checkerboard" in result.stderr
    run("score", src, "--out", tmp_path / "s.h5", code=2)


def test_an_interrupted_score_leaves_existing_groups_untouched(trained, tmp_path, monkeypatch):
    d, src, ood, _ = trained
    scores = tmp_path / "s.h5"
    run("score", src, "--model", d / "m.pt", "--out", scores, "--quiet")
    before = scores.read_bytes()
    import ood_flow.score.methods as methods

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(methods, "score_likelihood", interrupted)
    result = run("score", ood, "--model", d / "m.pt", "--out", scores, "--quiet", code=130)
    assert "interrupted" in result.stderr
    assert scores.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["s.h5"]


def test_tabular_on_vectors_and_wrong_family(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "v.npy", rng.normal(size=(60, 4)).astype(np.float32) * [1, 10, 100, 0.1])
    summary = run_json("train", "--data", tmp_path / "v.npy", "--out", tmp_path / "t.pt", "--hidden", "8",
                       "--epochs", "2", "--quiet")
    assert summary["family"] == "tabular"
    one_line_error(run("train", "--data", tmp_path / "v.npy", "--out", tmp_path / "r.pt", "--model", "realnvp",
                       code=1), "tabular")
    run("score", tmp_path / "v.npy", "--model", tmp_path / "t.pt", "--out", tmp_path / "s.h5", "--quiet")
