"""What ``speed.py`` times: one model in one setting (memory format, precision), and how a peer's best
setting is chosen.

A *setting* is ``(memory format, precision)``. oodflow always runs channels-last (its st-networks
convert internally) and takes ``precision`` through :meth:`ood_flow.runtime.Runtime.st_networks`
(bf16 st-networks, fp32 elsewhere). normflows runs as a user would run it at its best: the model
and its inputs channels-last or NCHW, and bf16 as ``torch.autocast`` around the whole model, which
is how normflows would be run in bf16; both score under ``torch.inference_mode`` in eval mode.

A setting in bf16 counts only if it stays within the accuracy bounds of issue 14 against the same
library in fp32: mean |delta bits/dim| <= 0.01 over the scoring images (:func:`bf16_error`, on a
copy whose weights are moved by N(0, 0.005^2) so that no st-network is the identity, as it is at
initialisation). Random weights are not trained ones: the bound on a trained model is checked in
``tests/test_precision.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
from pathlib import Path

import torch
from speed_machine import MALLOC_CHOICES, cap_note
from speed_measure import flops_per_image, timed
from speed_models import bits_per_dim_8bit, bits_per_dim_loss

from ood_flow.fileio import atomic_write
from ood_flow.flows import fused
from ood_flow.runtime import Runtime

BF16_BOUND = 0.01  # mean |delta bits/dim| a bf16 setting may move scores by (issue 14)
PEER_SETTINGS = [("nchw", "fp32"), ("channels_last", "fp32"), ("nchw", "bf16"), ("channels_last", "bf16")]


class Runner:
    """One model in one setting, with its optimiser: a training step and a scoring pass over fixed batches."""

    def __init__(self, lib: str, model: torch.nn.Module, setting: tuple[str, str], train_x: torch.Tensor,
                 score_x: torch.Tensor, score_batch: int, narrow: str | None = None, adam: dict | None = None):
        self.lib, self.setting, self.narrow = lib, setting, narrow  # narrow: oodflow's Runtime.narrow (None: its own)
        self.ours = lib == "oodflow"
        self.channels_last = setting[0] == "channels_last"
        self.precision = setting[1]
        self.model = model.to(memory_format=torch.channels_last) if self.channels_last and not self.ours else model
        self.train_x, self.score_x, self.score_batch = train_x, score_x, score_batch
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-4, **(adam or {}))  # adam: e.g. {"fused": True}
        self.loss = float("nan")

    @property
    def name(self) -> str:
        return f"{self.lib} {self.setting[0]} {self.precision}"

    def context(self):
        """The precision context this runner's model runs in (oodflow's st-network runtime, or normflows' autocast)."""
        if self.ours:
            return Runtime(st=self.precision, narrow=self.narrow).st_networks()
        if self.precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and not self.ours:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.context():
            return self.model.log_prob(x).float()

    def train_step(self, x: torch.Tensor | None = None) -> None:
        self.model.train()
        loss = bits_per_dim_loss(self.log_prob, self.train_x if x is None else x)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.loss = loss.item()

    def score(self, x: torch.Tensor | None = None) -> None:
        self.model.eval()
        x = self.score_x if x is None else x
        with torch.inference_mode():
            for start in range(0, x.shape[0], self.score_batch):
                self.log_prob(x[start : start + self.score_batch])

    def bits_per_dim(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        with torch.inference_mode():
            return bits_per_dim_8bit(self.log_prob(x), x[0].numel())

    def flops(self, n: int = 4) -> dict[str, float]:
        """Conv/matmul FLOPs per image: forward (scoring) and forward + backward (training), fp32 plain modules
        (the counter does not see oneDNN's fused kernels, which compute the same convolutions)."""
        x = self.train_x[:n]
        self.model.train()
        train = flops_per_image(lambda v: bits_per_dim_loss(self.model.log_prob, v).backward(), x)
        self.opt.zero_grad(set_to_none=True)
        self.model.eval()
        path = fused.path_of(self.model)
        with torch.inference_mode(), path.disabled() if path is not None else contextlib.nullcontext():
            score = flops_per_image(self.model.log_prob, x)
        return {"train": train, "score": score}


def positive_int(text: str) -> int:
    """An argparse type for counts (rounds, samples): a whole number of at least 1, else argparse's one-line usage
    error (exit 2)."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return n


def results_folder(text: str) -> Path:
    """An argparse type for ``--out``: a folder for results, refused before any timing (argparse's one-line usage
    error, exit 2) where a file already stands at that path (writing there would fail after the whole run)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a folder for the results")
    return path


def rounds_parser(doc: str, rounds: int, results: str) -> argparse.ArgumentParser:
    """The options of a benchmark that times the preset's models in alternating rounds: ``--quick``, ``--rounds``
    (default ``rounds``, 3 with ``--quick``: :func:`rounds_of`), ``--data-dir``, ``--malloc``, and ``--save`` to
    ``benchmarks/results/<results>[.quick].md`` (or into the folder ``--out``, e.g. ``benchmarks/results/no_amx``)."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small models, 3 rounds")
    ap.add_argument("--rounds", type=positive_int, default=None, help=f"rounds (default: {rounds}, or 3 with --quick)")
    ap.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data")
    ap.add_argument("--malloc", default="kept", choices=MALLOC_CHOICES, help="as speed.py's --malloc")
    ap.add_argument("--save", action="store_true", help=f"write benchmarks/results/{results}[.quick].md")
    ap.add_argument("--out", type=results_folder, default=Path(__file__).resolve().parents[1] / "results",
                    help="the folder --save writes into (default benchmarks/results)")
    ap.set_defaults(default_rounds=rounds, results=results)
    return ap


def rounds_of(args: argparse.Namespace) -> int:
    """The rounds :func:`rounds_parser`'s options ask for."""
    return args.rounds if args.rounds is not None else 3 if args.quick else args.default_rounds


def machine_line(env: dict, malloc: str, flags: bool = False) -> str:
    """The results' line on the machine (``speed_machine.machine``'s ``env``, a cap on oneDNN included, its CPU
    flags with ``flags``) and the allocator in force."""
    listed = f", flags {', '.join(env['cpu_flags'])}" if flags else ""
    return (f"Machine: {env['cpu']}{listed}{cap_note(env)}, {env['threads']} threads, malloc {malloc}, load average "
            f"{env['load_average_start'][0]:.2f} at the start; torch {torch.__version__}.")


def spread(values: list[float], digits: int = 1) -> str:
    """Per-round figures as the alternating-rounds tables print them: ``median (min-max)``."""
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def ratio_spread(a: list[float], b: list[float], bold: bool = False) -> str:
    """``a / b`` paired by round, as ``median x (min-max)`` (the median in bold with ``bold``); ``within the noise``
    where a round's figure is not positive (a difference of two timings smaller than their noise)."""
    if min(a + b) <= 0:
        return "within the noise"
    r = [x / y for x, y in zip(a, b)]
    median = f"{statistics.median(r):.2f}x"
    return f"{f'**{median}**' if bold else median} ({min(r):.2f}-{max(r):.2f})"


def publish(lines: list[str], args: argparse.Namespace) -> None:
    """Print the results, and with ``--save`` write them where :func:`rounds_parser` said."""
    publish_as(lines, args.out, f"{args.results}{'.quick' if args.quick else ''}.md", args.save)


def publish_as(lines: list[str], out: Path, name: str, save: bool) -> None:
    """A results table's lines printed, and with ``save`` written atomically as ``out/name`` (the folder made)."""
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if save:
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / name, overwrite=True) as tmp:
            Path(tmp).write_text(text)


def perturbed(model: torch.nn.Module, seed: int = 0, scale: float = 0.005) -> torch.nn.Module:
    """A copy with every parameter moved by N(0, scale^2): no zero-initialised layer left."""
    other = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return other


def bf16_error(make, x: torch.Tensor) -> float:
    """Mean |bits/dim(bf16) - bits/dim(fp32)| of one perturbed model; ``make(model, precision)`` -> Runner."""
    model = perturbed(make(None, "fp32").model)
    fp32, bf16 = make(model, "fp32"), make(model, "bf16")
    return (bf16.bits_per_dim(x) - fp32.bits_per_dim(x)).abs().mean().item()


def best_setting(runners: dict, error: float, task: str, repeats: int) -> tuple[tuple[str, str], dict]:
    """The fastest setting for ``task`` among those within the bf16 bound; timed alternately, median of repeats."""
    rates: dict = {s: [] for s in runners}
    for i in range(repeats):
        for s in (list(runners) if i % 2 == 0 else list(runners)[::-1]):
            rates[s].append(rate(runners[s], task))
    medians = {s: statistics.median(v) for s, v in rates.items()}
    allowed = [s for s in runners if s[1] == "fp32" or error <= BF16_BOUND]
    return max(allowed, key=medians.get), {f"{s[0]} {s[1]}": m for s, m in medians.items()}


def rate(runner: Runner, task: str) -> float:
    """Images per second of two training steps or one scoring pass, timed right after an untimed one of the same
    runner: a real run takes consecutive steps of one model, whereas here each timing follows other models'
    (for either library, the first call after a switch pays for cold caches and the allocator's blocks sized for
    the other model)."""
    if task == "train":  # two steps a timing: one step of a small model is tens of milliseconds
        runner.train_step()
        return 2 * runner.train_x.shape[0] / timed(lambda: (runner.train_step(), runner.train_step()))
    runner.score()
    return runner.score_x.shape[0] / timed(runner.score)
