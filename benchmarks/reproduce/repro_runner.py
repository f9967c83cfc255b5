"""Run the public ``oodflow`` CLI for benchmarks/reproduce/reproduce.py: echo, run, parse ``--json``.

Every step of the reproduction is a subprocess ``python -m ood_flow ...`` (what the ``oodflow``
entry point runs), printed to stderr as ``$ oodflow ...`` first, so each number in the report
comes from a command a user can copy.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


class ReproError(RuntimeError):
    """A CLI step failed: the message names the command and its exit code."""


@dataclass
class Runner:
    """Where files go and how the CLI is called.

    Attributes:
        data_dir: dataset root, passed to the children as ``OODFLOW_DATA_DIR``.
        work: models, score and feature files (not committed).
        figures: PNGs linked from the report.
        commands: the ``oodflow ...`` lines of the experiment now running, as the report shows them.
        device: ``--device`` of every train and score (None: oodflow's default).
        shown: a command line as ``commands`` records it (reproduce.py passes ``portable.portable``, so the
            committed report holds no path of the machine that ran it).
    """

    data_dir: Path
    work: Path
    figures: Path
    device: str | None = None
    commands: list[str] = field(default_factory=list)
    shown: Callable[[str], str] = str

    def run(self, *args: str) -> str:
        """Run ``oodflow ARGS``; return its stdout. stderr (progress, messages) passes through."""
        line = "oodflow " + shlex.join(args)
        self.commands.append(self.shown(line))
        print(f"$ {line}", file=sys.stderr, flush=True)
        env = {**os.environ, "OODFLOW_DATA_DIR": str(self.data_dir)}
        proc = subprocess.run([sys.executable, "-m", "ood_flow", *args], stdout=subprocess.PIPE,
                              text=True, env=env, check=False)
        if proc.returncode != 0:
            raise ReproError(f"`{line}` failed with exit code {proc.returncode}")
        return proc.stdout

    def json(self, *args: str) -> dict:
        """Run ``oodflow ARGS --json`` and parse stdout."""
        out = self.run(*args, "--json")
        try:
            return json.loads(out)
        except json.JSONDecodeError as exc:
            raise ReproError(f"`oodflow {args[0]}` printed no JSON: {exc}") from None

    def train(self, out: Path, data: str, limit: int | None, *options: str) -> dict:
        """Train on the first ``limit`` samples of ``data`` (seed 0); ``options`` set model and budget.

        Resumable: a finished training leaves ``OUT.train.json`` (its ``--json`` summary) and is not
        repeated; one cut off mid-way continues from its checkpoint with ``--resume``.
        """
        done = out.with_suffix(".train.json")
        if done.exists():
            print(f"# kept {out} (trained earlier; remove {done.name} to retrain)", file=sys.stderr, flush=True)
            return json.loads(done.read_text())
        head = ["train", "--data", data, *(["--limit", str(limit)] if limit else []), "--out", str(out)]
        if out.with_suffix(".ckpt.pt").exists():
            info = self.json(*head, *self._device(), "--resume")
        else:
            info = self.json(*head, *options, *self._device(), "--seed", "0", "--overwrite")
        if not info.get("interrupted"):
            done.write_text(json.dumps(info, indent=2) + "\n")
        return info

    def embed(self, source: str, limit: int, out: Path, *options: str) -> None:
        """``oodflow embed`` into ``out``, unless an earlier run wrote it."""
        if out.exists():
            print(f"# kept {out}", file=sys.stderr, flush=True)
            return
        self.run("embed", source, "--limit", str(limit), "--out", str(out), *options, "--quiet")

    def score(self, model: Path, scores: Path, source: str, name: str, limit: int, *options: str) -> dict:
        """Score the first ``limit`` samples of ``source`` into group ``name`` of ``scores``."""
        return self.json("score", source, "--limit", str(limit), "--model", str(model), "--out", str(scores),
                         "--name", name, "--overwrite", "--quiet", *self._device(), *options)

    def _device(self) -> list[str]:
        return ["--device", self.device] if self.device else []

    def evaluate(self, scores: Path, in_group: str, ood_groups: list[str], plot: Path | None) -> dict:
        """AUROC etc. of ``in_group`` against each OOD group, with 95 % bootstrap intervals (``ci``) and the
        histogram written to ``plot`` (replacing the figure of an earlier run, as the scores are)."""
        ood = [a for g in ood_groups for a in ("--ood", g)]
        extra = ["--plot", str(plot), "--overwrite"] if plot else []
        return self.json("evaluate", str(scores), "--in", in_group, *ood, *extra, "--ci", "0.95", "--quiet")["ood"]

    def figure(self, name: str) -> Path:
        self.figures.mkdir(parents=True, exist_ok=True)
        return self.figures / name
