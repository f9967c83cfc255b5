"""Where each library's time goes: its st-networks against everything else, per model and task.

``speed.py`` times whole training steps and scoring passes. This script splits them in two, for oodflow and
normflows alike: the st-networks (the convolutional networks that predict each coupling's scale and shift,
where nearly all of the FLOP are) and the rest (ActNorm, invertible 1x1 convolutions, coupling arithmetic,
squeezes, priors, the loss and the Adam step). Each st-network's inputs are caught at one training step (and
one scoring pass); the script then times, alternating:

* the whole step (or pass), as ``speed.py`` does (``speed_runs.rate``),
* the same st-networks alone on those inputs: forward and backward with fixed random output gradients
  (training; weight gradients accumulate as in the step), forward in eval mode under ``torch.inference_mode``
  (scoring), in the library's precision context (oodflow's bf16 st-networks; normflows' bf16 autocast),

and reports the difference as the rest. Models and settings are ``speed.py``'s full preset (or ``--quick``),
both libraries channels-last in bf16, the setting ``speed.py`` chose for normflows in every full-preset row.
The split is approximate: alone, the st-networks run back to back with warmer caches than between the other
layers of a step, so their share is a lower bound and the rest an upper one, alike for both libraries.

Usage::

    python benchmarks/speed/st_share.py --save      # benchmarks/results/st_share.md (a few minutes)
    python benchmarks/speed/st_share.py --quick     # small models, 3 rounds: a check that it runs
"""

from __future__ import annotations

# OpenMP wait policy: as the environment has it, as speed.py (see there)

import statistics  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parents[1])]

from speed import build, rounds_inputs  # noqa: E402
from speed_measure import timed  # noqa: E402
from speed_machine import shown_command  # noqa: E402
from speed_runs import Runner, machine_line, publish, rate, ratio_spread, rounds_parser, spread  # noqa: E402

from ood_flow.flows.convnets import ConvNet  # noqa: E402
from ood_flow.flows.precision import run_st  # noqa: E402

ARCHS = ("glow", "realnvp")
LIBS = ("oodflow", "normflows")
TASKS = ("train", "score")


def st_classes(lib: str) -> tuple[type, ...]:
    """The st-network classes of a library's models in speed.py."""
    if lib == "oodflow":
        return (ConvNet,)
    import normflows as nf

    return (nf.nets.ConvNet2d, nf.nets.ConvResidualNet)


def outermost(model: torch.nn.Module, classes: tuple[type, ...]) -> list[torch.nn.Module]:
    """The modules of ``classes`` in ``model`` that are not inside another one."""
    found: list[torch.nn.Module] = []
    inner: set[int] = set()
    for m in model.modules():
        if id(m) in inner or not isinstance(m, classes):
            continue
        found.append(m)
        inner.update(id(s) for s in m.modules())
    return found


class StNets:
    """A runner's st-networks replayed on the inputs they saw in one step (``train``) or pass (``score``)."""

    def __init__(self, runner: Runner):
        self.runner = runner
        self.nets = outermost(runner.model, st_classes(runner.lib))
        if not self.nets:
            raise RuntimeError(f"no st-networks found in {runner.lib}'s model")
        self.inputs = {task: self._catch(task) for task in TASKS}
        with self.runner.context():
            outs = [self._call(m, x) for m, x in self.inputs["train"]]
        g = torch.Generator().manual_seed(0)
        self.grads = [torch.randn(o.shape, generator=g).to(o.dtype) * 1e-3 for o in outs]
        self.runner.opt.zero_grad(set_to_none=True)

    def _catch(self, task: str) -> list[tuple[torch.nn.Module, torch.Tensor]]:
        caught: list = []
        hooks = [m.register_forward_hook(lambda m, i, o: caught.append((m, i[0].detach().clone()))) for m in self.nets]
        try:
            self.runner.train_step() if task == "train" else self.runner.score()
        finally:
            for h in hooks:
                h.remove()
        return caught

    def _call(self, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return run_st(net, x) if self.runner.ours else net(x)

    def train(self) -> None:
        self.runner.model.train()
        with self.runner.context():
            outs = [self._call(m, x.requires_grad_()) for m, x in self.inputs["train"]]
        torch.autograd.backward(outs, self.grads)

    def score(self) -> None:
        self.runner.model.eval()
        with torch.inference_mode(), self.runner.context():
            for m, x in self.inputs["score"]:
                self._call(m, x)

    def images(self, task: str) -> int:
        return self.runner.train_x.shape[0] if task == "train" else self.runner.score_x.shape[0]


def nets_rate(nets: StNets, task: str) -> float:
    """Images per second of the st-networks alone, timed as :func:`speed_runs.rate` times a whole step or pass."""
    if task == "train":
        nets.train()
        return 2 * nets.images(task) / timed(lambda: (nets.train(), nets.train()))
    nets.score()
    return nets.images(task) / timed(nets.score)


def measure(pairs: dict, rounds: int) -> dict:
    """Milliseconds per image of the whole step and of the st-networks alone, per runner and task, per round."""
    ms: dict = {key: {task: {"whole": [], "nets": []} for task in TASKS} for key in pairs}
    for i in range(rounds):
        for task in TASKS:
            for key in (list(pairs) if i % 2 == 0 else list(pairs)[::-1]):
                runner, nets = pairs[key]
                ms[key][task]["whole"].append(1e3 / rate(runner, task))
                ms[key][task]["nets"].append(1e3 / nets_rate(nets, task))
    return ms


def _cell(values: list[float], share: list[float] | None = None) -> str:
    """Median (min-max) of per-round figures, with the median per-round share of the whole where given."""
    return spread(values, 3) + (f", {statistics.median(share):.0%}" if share is not None else "")


def table(ms: dict) -> list[str]:
    rows = ["| model | task | library | whole ms/img (min-max) | st-networks ms/img (min-max), share | "
            "rest ms/img (min-max), share |", "|---|---|---|---:|---:|---:|"]
    for arch in ARCHS:
        for task in TASKS:
            parts = {}
            for lib in LIBS:
                m = ms[(arch, lib)][task]
                whole, nets = m["whole"], m["nets"]
                rest = [w - n for w, n in zip(whole, nets)]
                parts[lib] = (whole, nets, rest)
                rows.append(f"| {arch} | {task} | {lib} | {_cell(whole)} | "
                            f"{_cell(nets, [n / w for n, w in zip(nets, whole)])} | "
                            f"{_cell(rest, [r / w for r, w in zip(rest, whole)])} |")
            ours, peer = parts["oodflow"], parts["normflows"]
            rows.append(f"| {arch} | {task} | **normflows / oodflow time** | **{ratio_spread(peer[0], ours[0])}** | "
                        f"{ratio_spread(peer[1], ours[1])} | {ratio_spread(peer[2], ours[2])} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    args = rounds_parser(__doc__, 7, "st_share").parse_args(argv)
    rounds, malloc, p, x, score_x, env = rounds_inputs(args)
    pairs = {}
    for arch in ARCHS:
        for lib in LIBS:
            torch.manual_seed(0)
            runner = Runner(lib, build(lib, arch, p[arch]), ("channels_last", "bf16"), x, score_x, p["score_batch"])
            runner.train_step()  # ActNorm initialises on the first step; catch the inputs after it
            pairs[(arch, lib)] = (runner, StNets(runner))
    ms = measure(pairs, rounds)
    out = ["# Where the time goes: st-networks and the rest, oodflow and normflows", "",
           f"`{shown_command(__file__, argv, data=args.data_dir)}`", "",
           f"{machine_line(env, malloc)} speed.py's {'quick' if args.quick else 'full'} preset (training batch "
           f"{p['batch']}, scoring {p['score_images']} images in batches of {p['score_batch']}), both libraries "
           f"channels-last in bf16 (oodflow: bf16 st-networks; normflows: autocast around the whole model); "
           f"medians over {rounds} alternating rounds with their min-max; rest = whole - st-networks and each share of "
           f"the whole, per round. The last row of each block is normflows' time over oodflow's, per round (above 1: "
           f"oodflow faster). The rest is a difference of two timings: where it is a few per cent of the whole, the "
           f"rounds' spread of the whole is larger than it (a round's rest can come out negative), and its ratio is "
           f"not given.", ""]
    publish(out + table(ms), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
