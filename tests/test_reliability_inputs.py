"""The bad-input corpus: corrupt, truncated, wrong-kind and hostile files, NaN/inf tables, empty and
mixed folders, absurd options and outputs that would replace something.

Each case states its exit code (0 ok, 1 runtime error, 2 usage error) and a fragment of its message.
Every case must also: print no traceback (an exit 1 or 2 is one ``error:`` line), change no file
that existed before it (sha256 of every file before and after; a case that may update a file names
it), run no code from a file (the hostile pickles would create a marker), and leave no temporary or
lock file behind.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from reliability_helpers import fingerprints, leftovers
from typer.testing import CliRunner

import ood_flow
from ood_flow import store
from ood_flow.cli.main import app, main

MARKER = "PWNED"  # a hostile file that ran code would create this file in the case's folder
TRAIN = ("--channels", "4", "--blocks", "1", "--batch-size", "8", "--epochs", "1", "--quiet")


class _Payload:
    """Unpickling this runs ``touch MARKER``: it must never happen."""

    def __init__(self, folder):
        self.folder = folder

    def __reduce__(self):
        return (os.system, (f"touch {self.folder / MARKER}",))


def _png(path, size=(8, 8), mode="L", seed=0):
    rng = np.random.default_rng(seed)
    shape = size[::-1] + ((3,) if mode == "RGB" else ())
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(path)
    return path


def _build(d: Path) -> None:
    """The corpus folder: good files to work with, then bad and hostile ones."""
    rng = np.random.default_rng(0)
    x = ((rng.random((64, 8, 8)) < 0.3) * 200 + rng.integers(0, 40, (64, 8, 8))).astype(np.uint8)
    np.savez(d / "img.npz", x=x, y=np.arange(64) % 3)
    torch.manual_seed(0)
    flow = ood_flow.create_flow("realnvp", (1, 8, 8), channels=4, blocks=1)
    ood_flow.save_model(flow, d / "m.pt")
    ood_flow.save_model(flow, d / "m.h5")
    ood_flow.save_model(ood_flow.create_flow("tabular", (3,), hidden=8), d / "tab.pt")
    for name, seed in (("in", 0), ("ood", 1)):
        ll = np.random.default_rng(seed).normal(-100 - 50 * seed, 5, 40)
        store.write_group(d / "s.h5", name, {"log_likelihood": ll, "id": np.arange(40)}, {"source": name})
    store.write_features(d / "feat.h5", rng.normal(size=(20, 3)), ids=[str(i) for i in range(20)], attrs={})
    _png(d / "pic.png")
    shutil.copy(d / "s.h5", d / "scores.png")  # a score file under a picture's name
    (d / "table.csv").write_text("a,b,c\n" + "\n".join(f"{i},{i * 2},{i % 3}" for i in range(30)) + "\n")
    _bad_files(d)
    _folders(d)


def _bad_files(d: Path) -> None:
    model = (d / "m.pt").read_bytes()
    (d / "cut.pt").write_bytes(model[: len(model) // 2])
    (d / "empty.pt").write_bytes(b"")
    (d / "pic.pt").write_bytes((d / "pic.png").read_bytes())
    (d / "cut.h5").write_bytes((d / "s.h5").read_bytes()[:600])
    (d / "empty.h5").write_bytes(b"")
    (d / "cut_model.h5").write_bytes((d / "m.h5").read_bytes()[:900])
    (d / "dir.pt").mkdir()
    torch.save({"format": "oodflow-model", "x": _Payload(d)}, d / "evil.pt")
    with open(d / "evil_plain.pt", "wb") as f:
        pickle.dump(_Payload(d), f)
    np.save(d / "evil.npy", np.array([_Payload(d)], dtype=object), allow_pickle=True)
    np.savez(d / "evil.npz", x=np.array([_Payload(d)], dtype=object))
    flow = ood_flow.load_model(d / "m.pt")
    record = {**ood_flow.flows.io.header(flow), "state_dict": flow.state_dict(), "extra": {}}
    record["state_dict"] = {k: (v * float("nan") if v.is_floating_point() else v) for k, v in flow.state_dict().items()}
    torch.save(record, d / "nan.pt")
    torch.save({**ood_flow.flows.io.header(flow), "format_version": 99, "state_dict": flow.state_dict()}, d / "new.pt")
    torch.save({"state_dict": flow.state_dict()}, d / "foreign.pt")
    with h5py.File(d / "plain.h5", "w") as f:
        f["x"] = np.zeros(3)
    with h5py.File(d / "link.h5", "w") as f:
        f.attrs["oodflow_format"], f.attrs["oodflow_format_version"] = "scores", 1
        f["in"] = h5py.ExternalLink("/etc/passwd", "/")
    store.write_group(d / "nanscores.h5", "in", {"log_likelihood": np.full(5, np.nan)}, {})
    store.write_group(d / "nanscores.h5", "ood", {"log_likelihood": np.zeros(5)}, {})
    for name, text in {"nan.csv": "a,b,c\n1,2,3\n4,nan,6\n", "inf.csv": "a,b,c\n1,2,3\n4,inf,6\n",
                       "text.csv": "a,b,c\n1,2,3\n4,x,6\n", "empty.csv": "", "header.csv": "a,b,c\n",
                       "ragged.csv": "a,b,c\n1,2,3\n4,5\n"}.items():
        (d / name).write_text(text)
    np.save(d / "nan.npy", np.full((10, 3), np.nan, dtype=np.float32))
    np.save(d / "flat.npy", np.zeros(10, dtype=np.uint8))
    (d / "bomb.png").write_bytes(_bomb_png())


def _bomb_png() -> bytes:
    """A valid PNG header that claims 60000 x 60000 pixels (PIL's decompression-bomb guard must stop it)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + \
        chunk(b"IEND", b"")


def _folders(d: Path) -> None:
    (d / "emptydir").mkdir()
    (d / "nonimages").mkdir()
    (d / "nonimages" / "a.txt").write_text("not an image")
    (d / "mixed").mkdir()
    for i, size in enumerate([(8, 8), (12, 10), (16, 16), (8, 8)]):
        _png(d / "mixed" / f"{i}.png", size, seed=i)
    (d / "corrupt").mkdir()
    _png(d / "corrupt" / "0.png")
    (d / "corrupt" / "1.png").write_bytes((d / "corrupt" / "0.png").read_bytes()[:40])
    (d / "colour").mkdir()
    for i in range(3):
        _png(d / "colour" / f"{i}.png", (8, 8), "RGB", seed=i)


# ------------------------------------------------------------------ the corpus
# (id, arguments with {d} for the corpus folder and {o} for an empty output folder, exit code,
#  fragment of the message (or of stdout for exit 0), files the case may change)

LONG = "x" * 250
CASES = [
    # models that are not models
    ("score-truncated-model", "score {d}/img.npz --model {d}/cut.pt", 1, "cut.pt: not an oodflow model file"),
    ("score-empty-model", "score {d}/img.npz --model {d}/empty.pt", 1, "empty.pt"),
    ("score-png-as-model", "score {d}/img.npz --model {d}/pic.pt", 1, "pic.pt: not an oodflow model file"),
    ("score-dir-as-model", "score {d}/img.npz --model {d}/dir.pt", 1, "dir.pt"),
    ("score-missing-model", "score {d}/img.npz --model {d}/none.pt", 1, "none.pt"),
    ("score-hostile-model", "score {d}/img.npz --model {d}/evil.pt", 1, "evil.pt: not an oodflow model file"),
    ("score-hostile-plain-pickle", "score {d}/img.npz --model {d}/evil_plain.pt", 1, "evil_plain.pt"),
    ("score-nan-model", "score {d}/img.npz --model {d}/nan.pt", 1, "weights are not finite"),
    ("score-newer-model", "score {d}/img.npz --model {d}/new.pt", 1, "newer than this oodflow"),
    ("score-foreign-model", "score {d}/img.npz --model {d}/foreign.pt", 1, "not an oodflow model file"),
    ("score-truncated-h5-model", "score {d}/img.npz --model {d}/cut_model.h5", 1, "cut_model.h5"),
    ("score-score-file-as-model", "score {d}/img.npz --model {d}/s.h5", 1, "s.h5: not an oodflow model file"),
    ("score-txt-model", "score {d}/img.npz --model {d}/table.csv", 1, "use .pt or .h5"),
    ("visualize-hostile-model", "visualize samples --model {d}/evil.pt --out {o}/a.png", 1, "not an oodflow model"),
    # data that is not data
    ("score-hostile-npy", "score {d}/evil.npy --model {d}/m.pt", 1, "evil.npy"),
    ("score-hostile-npz", "score {d}/evil.npz --model {d}/m.pt", 1, "evil.npz"),
    ("train-hostile-npy", "train --data {d}/evil.npy --out {o}/t.pt", 1, "evil.npy"),
    ("score-nan-table", "score {d}/nan.csv --model {d}/tab.pt", 1, "NaN and inf are not allowed"),
    ("score-inf-table", "score {d}/inf.csv --model {d}/tab.pt", 1, "NaN and inf are not allowed"),
    ("train-nan-table", "train --data {d}/nan.csv --out {o}/t.pt", 1, "NaN and inf are not allowed"),
    ("train-nan-npy", "train --data {d}/nan.npy --out {o}/t.pt", 1, "nan.npy"),
    ("score-text-table", "score {d}/text.csv --model {d}/tab.pt", 1, "text.csv"),
    ("score-empty-table", "score {d}/empty.csv --model {d}/tab.pt", 1, "empty.csv"),
    ("score-header-only-table", "score {d}/header.csv --model {d}/tab.pt", 1, "header.csv"),
    ("score-ragged-table", "score {d}/ragged.csv --model {d}/tab.pt", 1, "ragged.csv"),
    ("score-flat-array", "score {d}/flat.npy --model {d}/m.pt", 1, "flat.npy"),
    ("score-empty-folder", "score {d}/emptydir --model {d}/m.pt", 1, "contains no images"),
    ("score-folder-without-images", "score {d}/nonimages --model {d}/m.pt", 1, "contains no images"),
    ("score-mixed-sizes", "score {d}/mixed --model {d}/m.pt", 1, "pass --resize"),
    ("score-mixed-sizes-resized", "score {d}/mixed --model {d}/m.pt --resize --json", 0, '"n": 4'),
    ("score-corrupt-image", "score {d}/corrupt --model {d}/m.pt", 1, "1.png"),
    ("score-corrupt-image-skipped", "score {d}/corrupt --model {d}/m.pt --skip-invalid --json", 0, '"skipped": 1'),
    ("score-colour-on-grey-model", "score {d}/colour --model {d}/m.pt", 1, "--grayscale"),
    ("score-bomb", "score {d}/bomb.png --model {d}/m.pt", 1, "bomb.png"),
    ("score-images-on-tabular", "score {d}/img.npz --model {d}/tab.pt", 1, "embed the images first"),
    ("score-missing-source", "score {d}/nothing.npz --model {d}/m.pt", 1, "nothing.npz"),
    # score files that are not score files
    ("evaluate-truncated", "evaluate {d}/cut.h5 --in in --ood ood", 1, "cut.h5"),
    ("evaluate-empty", "evaluate {d}/empty.h5 --in in --ood ood", 1, "empty.h5"),
    ("evaluate-plain-h5", "evaluate {d}/plain.h5 --in in --ood ood", 1, "not an oodflow score file"),
    ("evaluate-features", "evaluate {d}/feat.h5 --in in --ood ood", 1, "not a score file"),
    ("evaluate-model", "evaluate {d}/m.pt --in in --ood ood", 1, "m.pt"),
    ("evaluate-external-link", "evaluate {d}/link.h5 --in in --ood ood", 1, "no group 'in'"),
    ("evaluate-missing-group", "evaluate {d}/s.h5 --in in --ood nope", 1, "no group 'nope'"),
    ("evaluate-nan-scores", "evaluate {d}/nanscores.h5 --in in --ood ood", 1, "nanscores.h5"),
    ("score-reference-nan", "score {d}/img.npz --model {d}/m.pt --reference {d}/nanscores.h5:in", 1, "nanscores"),
    # absurd options: usage errors
    *[(f"train-{opt[2:]}-{val}", f"train --data {{d}}/img.npz --out {{o}}/t.pt {opt} {val}", 2, opt)
      for opt, val in [("--lr", "nan"), ("--lr", "inf"), ("--lr", "-inf"), ("--lr", "0"), ("--lr", "-1"),
                       ("--clip", "0"), ("--clip", "nan"), ("--weight-decay", "-1e-5"), ("--weight-decay", "nan"),
                       ("--val-fraction", "1"), ("--val-fraction", "-0.1"), ("--val-fraction", "nan"),
                       ("--perturb", "1.5"), ("--perturb", "-0.1"), ("--perturb", "nan"), ("--epochs", "0"),
                       ("--batch-size", "0"), ("--max-steps", "0"), ("--seed", "-1"), ("--seed", "99999999999")]],
    ("train-negative-threshold-nan", "train --data {d}/img.npz --out {o}/t.pt --negative-data {d}/img.npz "
     "--negative-threshold nan", 2, "--negative-threshold"),
    *[(f"evaluate-min-auroc-{val}", f"evaluate {{d}}/s.h5 --in in --ood ood --min-auroc {val}", 2, "--min-auroc")
      for val in ("nan", "inf", "-0.1", "1.5")],
    *[(f"evaluate-tpr-{val}", f"evaluate {{d}}/s.h5 --in in --ood ood --tpr {val}", 2, "--tpr")
      for val in ("nan", "1.5", "-1", "0")],
    ("evaluate-n-batches-0", "evaluate {d}/s.h5 --in in --ood ood --typicality --n-batches 0", 2, "--n-batches"),
    # NaN is named as such (typer's range check said "less than or equal to 1" of it)
    ("score-tpr-nan-named", "score {d}/img.npz --model {d}/m.pt --tpr nan", 2,
     "--tpr must be a number in (0, 1], got nan"),
    ("score-max-ood-fraction-nan-named", "score {d}/img.npz --model {d}/m.pt --reference {d}/s.h5:in "
     "--max-ood-fraction nan", 2, "--max-ood-fraction must be a number in [0, 1], got nan"),
    ("evaluate-tpr-nan-named", "evaluate {d}/s.h5 --in in --ood ood --tpr nan", 2,
     "--tpr must be a number in (0, 1], got nan"),
    ("report-tpr-nan-named", "report {d}/s.h5 --in in --ood ood --tpr nan --out {o}/r.html", 2,
     "--tpr must be a number in (0, 1], got nan"),
    ("train-min-delta-nan-named", "train --data {d}/img.npz --out {o}/t.pt --min-delta nan", 2,
     "--min-delta must be a finite number >= 0, got nan"),
    ("visualize-temperature-nan-named", "visualize samples --model {d}/m.pt --out {o}/a.png --temperature nan", 2,
     "--temperature must be a finite number >= 0, got nan"),
    ("evaluate-in-as-ood", "evaluate {d}/s.h5 --in in --ood ood --ood in", 2, "--ood in is the --in group"),
    ("report-in-as-ood", "report {d}/s.h5 --in in --ood in --out {o}/r.html", 2, "--ood in is the --in group"),
    *[(f"score-{opt[2:]}-{val}", f"score {{d}}/img.npz --model {{d}}/m.pt {opt} {val}", 2, opt)
      for opt, val in [("--tpr", "nan"), ("--tpr", "0"), ("--dequant-samples", "0"), ("--batch-size", "0"),
                       ("--seed", "-1")]],
    *[(f"score-max-ood-fraction-{val}", f"score {{d}}/img.npz --model {{d}}/m.pt --reference {{d}}/s.h5:in "
       f"--max-ood-fraction {val}", 2, "--max-ood-fraction") for val in ("nan", "2", "-1")],
    *[(f"visualize-temperature-{val}", f"visualize samples --model {{d}}/m.pt --out {{o}}/a.png --temperature {val}", 2,
       "--temperature") for val in ("nan", "inf", "-1")],
    ("visualize-count-0", "visualize samples --model {d}/m.pt --out {o}/a.png --count 0", 2, "--count"),
    ("embed-image-size-0", "embed {d}/img.npz --backbone resnet18 --out {o}/f.h5 --image-size 0", 2, "--image-size"),
    # legitimate zeros and negatives stay valid
    ("train-zero-seed-and-decay", "train --data {d}/img.npz --out {o}/t.pt --seed 0 --weight-decay 0 "
     + " ".join(TRAIN), 0, ""),
    ("train-negative-threshold", "train --data {d}/img.npz --out {o}/t.pt --negative-data {d}/img.npz "
     "--negative-threshold -30000 " + " ".join(TRAIN), 0, ""),
    # outputs that would replace something
    *[(f"histogram-over-{name.replace('.', '-')}", f"visualize histogram {{d}}/s.h5 --out {{d}}/{name}", code,
       fragment) for name, code, fragment in (("s.h5", 2, "ending in .png"), ("m.pt", 2, "ending in .png"),
                                              ("table.csv", 2, "ending in .png"), ("pic.png", 1, "exists"))],
    ("histogram-over-score-file-overwrite", "visualize histogram {d}/s.h5 --out {d}/s.h5 --overwrite", 2,
     "ending in .png"),
    ("histogram-over-score-file-named-png", "visualize histogram {d}/s.h5 --out {d}/scores.png --overwrite", 1,
     "is not a PNG image"),
    ("histogram-over-png-overwrite", "visualize histogram {d}/s.h5 --out {d}/pic.png --overwrite", 0, "", {"pic.png"}),
    ("samples-over-model", "visualize samples --model {d}/m.pt --out {d}/m.pt", 2, "ending in .png"),
    ("latents-over-table-overwrite", "visualize latents {d}/img.npz --model {d}/m.pt --out {d}/table.csv --overwrite",
     2, "ending in .png"),
    ("latents-over-png", "visualize latents {d}/img.npz --model {d}/m.pt --out {d}/pic.png", 1, "exists"),
    ("coupling-over-scores-named-png", "visualize coupling {d}/img.npz --model {d}/m.pt --out {d}/scores.png "
     "--overwrite", 1, "is not a PNG image"),
    ("evaluate-plot-over-score-file", "evaluate {d}/s.h5 --in in --ood ood --plot {d}/s.h5", 2, "ending in .png"),
    ("evaluate-plot-over-png", "evaluate {d}/s.h5 --in in --ood ood --plot {d}/pic.png", 1, "exists"),
    ("evaluate-plot-over-scores-named-png", "evaluate {d}/s.h5 --in in --ood ood --plot {d}/scores.png --overwrite",
     1, "is not a PNG image"),
    ("evaluate-plot-over-png-overwrite", "evaluate {d}/s.h5 --in in --ood ood --plot {d}/pic.png --overwrite", 0, "",
     {"pic.png"}),
    ("score-into-model-file", "score {d}/img.npz --model {d}/m.pt --out {d}/m.h5", 1, "not an oodflow score file"),
    ("score-into-features-file", "score {d}/img.npz --model {d}/m.pt --out {d}/feat.h5", 1, "feat.h5"),
    ("score-into-plain-h5-overwrite", "score {d}/img.npz --model {d}/m.pt --out {d}/plain.h5 --overwrite", 1,
     "plain.h5"),
    ("score-existing-group", "score {d}/img.npz --model {d}/m.pt --out {d}/s.h5 --name in", 1,
     "exists; pass --overwrite"),
    ("score-new-group", "score {d}/img.npz --model {d}/m.pt --out {d}/s.h5 --name new --json", 0, '"group": "new"',
     {"s.h5"}),
    ("score-into-folder", "score {d}/img.npz --model {d}/m.pt --out {d}/emptydir", 1, "emptydir"),
    ("score-into-missing-folder", "score {d}/img.npz --model {d}/m.pt --out {o}/no/s.h5", 1, "no such folder"),
    ("score-long-name", f"score {{d}}/img.npz --model {{d}}/m.pt --out {{o}}/{LONG}.h5 --json", 0, '"n": 64'),
    ("score-too-long-name", f"score {{d}}/img.npz --model {{d}}/m.pt --out {{o}}/{LONG}{LONG}.h5", 1, "too long"),
    ("train-over-score-file", "train --data {d}/img.npz --out {d}/s.h5 --overwrite", 1, "not an oodflow model file"),
    ("train-over-model", "train --data {d}/img.npz --out {d}/m.pt", 1, "exists"),
    ("train-into-missing-folder", "train --data {d}/img.npz --out {o}/no/t.pt", 1, "no such folder"),
    ("train-long-name", f"train --data {{d}}/img.npz --out {{o}}/{LONG}.pt " + " ".join(TRAIN), 0, ""),
    ("embed-over-score-file", "embed {d}/img.npz --backbone resnet18 --out {d}/s.h5 --overwrite", 1,
     "not an oodflow features file"),
    ("embed-over-model", "embed {d}/img.npz --backbone resnet18 --out {d}/m.h5", 1, "exists"),
]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    _build(d)
    return d


def _case(row):
    name, args, code, fragment, *rest = row
    return pytest.param(args, code, fragment, rest[0] if rest else set(), id=name)


@pytest.mark.parametrize("args, code, fragment, may_change", [_case(r) for r in CASES])
def test_bad_input(tmp_path, template, args, code, fragment, may_change):
    d, o = tmp_path / "corpus", tmp_path / "out"
    shutil.copytree(template, d, symlinks=True)
    o.mkdir()
    before = fingerprints(d)
    argv = [a.format(d=d, o=o) for a in args.split()]
    result = CliRunner().invoke(app, argv)
    what = f"oodflow {' '.join(argv)}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert result.exit_code == code, f"exit {result.exit_code}, expected {code}: {what}\n{result.exception!r}"
    assert "Traceback" not in result.stderr + result.stdout, what
    if code == 1 or (code == 2 and result.stderr.startswith("error:")):
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), what
    assert fragment in (result.stderr if code else result.stdout), what
    after = fingerprints(d)
    changed = {Path(p).name for p in before if before[p] != after.get(p)}
    assert changed <= may_change, f"changed {changed}: {what}"
    assert not (d / MARKER).exists(), f"a hostile file ran code: {what}"
    assert not leftovers(tmp_path), what



USAGE = [  # what typer itself refuses, as the oodflow command prints it: one line, exit 2
    (("train", "--data", "x.npz", "--lr", "abc"), "Invalid value for '--lr'"),
    (("evaluate", "s.h5", "--bogus"), "No such option: --bogus"),
    (("score",), "Missing option '--model'"),
    (("visualize", "samples", "--model", "m.pt", "--out", "a.png", "--count", "x"), "Invalid value for '--count'"),
]


@pytest.mark.parametrize("args, fragment", USAGE, ids=[" ".join(a[:2]) for a, _ in USAGE])
def test_usage_errors_of_the_oodflow_command_are_one_line(monkeypatch, capsys, args, fragment):
    """Through the command's own entry point (not CliRunner, which formats typer's errors itself)."""
    monkeypatch.setattr(sys, "argv", ["oodflow", *args])
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as stop:
            main()
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert stop.value.code == 2 and not out, f"{args}: exit {stop.value.code}: {err}"
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment.lower() in lines[0].lower(), err
    assert f"(see 'oodflow {args[0]}" in lines[0] and "--help')" in lines[0], err
