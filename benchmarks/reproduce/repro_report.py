"""Render benchmarks/results/reproduction.md from reproduction.json (and write both).

The JSON is ``{"experiments": [...], ...run metadata}``; each experiment has ``id``, ``title``,
``claim``, ``verdict`` (holds / does not hold / inconclusive at this budget), ``reason``,
``budget`` (``ours``, ``paper``), ``config``, ``rows`` (``variant``, ``ood``, ``auroc`` and
``auroc_paper`` as fractions, ``auroc_ci``, ``bpd_in``, ``bpd_ood``, ``bpd_gap``, ``val_bpd``,
``epochs``, ``converged``, ``n_in``, ``n_ood``), ``commands``, ``wall_s`` and ``finished``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ood_flow.fileio import atomic_write

NAMES = {"fashionmnist": "FashionMNIST", "mnist": "MNIST", "notmnist": "notMNIST", "cifar10": "CIFAR-10",
         "celeba": "CelebA"}
HEADER = ("| variant | OOD set | AUROC ours [95% CI] | AUROC paper | bits/dim in-dist | bits/dim OOD "
          "| in-dist gap to baseline | val bits/dim, last epoch | epochs run | converged | n in / OOD |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")


def minutes(seconds: float | None) -> str:
    """``572.3`` -> ``9 min 32 s``."""
    if seconds is None:
        return "—"
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def _num(x: float | None, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def _interval(ci: list | None) -> str:
    return "" if not ci else f" [{ci[0]:.3f}, {ci[1]:.3f}]"


def row_line(row: dict) -> str:
    """One table row: AUROC as a fraction with its bootstrap interval, the paper's beside it, then bits/dim."""
    converged = {True: "yes", False: "**no**"}.get(row.get("converged"), "—")
    cells = [row["variant"], NAMES.get(row["ood"], row["ood"]), _num(row.get("auroc"), ".3f") + _interval(
             row.get("auroc_ci")), _num(row.get("auroc_paper"), ".4g"), _num(row.get("bpd_in"), ".3f"),
             _num(row.get("bpd_ood"), ".3f"), _num(row.get("bpd_gap"), "+.3f"), _num(row.get("val_bpd"), ".3f"),
             str(row.get("epochs") or "—"), converged, f"{row.get('n_in', '?')} / {row.get('n_ood', '?')}"]
    return "| " + " | ".join(cells) + " |"


def summary(results: dict) -> list[str]:
    lines = ["| experiment | claim (as the paper states it) | verdict | our budget | paper's budget |",
             "|---|---|---|---|---|"]
    for exp in results["experiments"]:
        budget = exp.get("budget") or {}
        lines.append(f"| [{exp['title']}](#{exp['id']}) | {exp.get('claim', '—')} | **{exp['verdict']}** "
                     f"| {budget.get('ours', '—')} | {budget.get('paper', '—')} |")
    return lines


def section(exp: dict) -> list[str]:
    """The markdown of one experiment: claim, verdict with its numbers, budgets, table, commands."""
    budget = exp.get("budget") or {}
    when = f" (finished {exp.get('run_at', '?')}, git {exp.get('git', '?')})" if exp.get("finished") else ""
    lines = [f'<a id="{exp["id"]}"></a>', f"## {exp['title']}", "",
             f"- Claim: {exp.get('claim', '—')}", f"- Verdict: **{exp['verdict']}** — {exp.get('reason', '')}",
             f"- Our budget: {budget.get('ours', '—')}; wall time {minutes(exp.get('wall_s'))}{when}",
             f"- Paper's budget: {budget.get('paper', '—')}", f"- Configuration: {exp.get('config', '—')}", ""]
    if exp.get("rows"):
        lines += [HEADER, *map(row_line, exp["rows"]), ""]
    if exp.get("commands"):
        lines += ["<details><summary>Commands</summary>", "", "```", *exp["commands"], "```", "", "</details>", ""]
    return lines


def render_markdown(results: dict) -> str:
    """The whole report as markdown text."""
    env = results.get("environment", {})
    lines = ["# Reproduction: Kirichenko, Izmailov & Wilson (NeurIPS 2020)", ""]
    if results.get("quick"):
        lines += ["> **QUICK RUN** (`--quick`): a smoke test at a tiny budget; the numbers mean nothing.", ""]
    if not results.get("complete"):
        lines += ["> **Incomplete**: the run was stopped before every experiment finished; the unfinished ones "
                  "are listed as inconclusive at this budget.", ""]
    lines += [f"Produced by `{results.get('command', 'python benchmarks/reproduce/reproduce.py')}` (preset "
              f"`{results.get('preset', 'cpu')}`, started {results.get('started', '?')}) with oodflow "
              f"{env.get('oodflow', '?')} (git {env.get('git', '?')}), torch {env.get('torch', '?')}, "
              f"{env.get('cpus', '?')} CPU cores shared with other work (load average at start "
              f"{env.get('load_start', '?')}), OMP_NUM_THREADS={env.get('omp_num_threads', 'unset')}. Wall time of "
              f"the finished experiments {minutes(results.get('wall_s'))}.", "",
              "AUROC as a fraction: in-distribution is the positive class and the log-likelihood the score, so "
              "0.5 is chance and below 0.5 means the flow prefers the OOD set (the paper's failure); in brackets "
              "its 95% bootstrap interval (`oodflow evaluate --ci 0.95`). AUROC paper: Table 1 where it has the "
              "pair, else —. Bits/dim: mean over the scored test images of each set (lower = higher "
              "likelihood); the scored model is the epoch early stopping kept (lowest validation bits/dim), the "
              "val column the last epoch run. A verdict is **holds** or **does not hold** only when every model "
              "of the experiment converged by the rule in its budget; otherwise it is **inconclusive at this "
              "budget**.", "",
              "## Summary", "", *summary(results), ""]
    for exp in results["experiments"]:
        lines += section(exp)
    return "\n".join(lines).rstrip() + "\n"


def write_report(results: dict, folder: Path) -> tuple[Path, Path]:
    """Write ``reproduction.md`` and ``reproduction.json`` into ``folder``, each atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    md, js = folder / "reproduction.md", folder / "reproduction.json"
    with atomic_write(js, overwrite=True) as tmp:
        tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
    with atomic_write(md, overwrite=True) as tmp:
        tmp.write_text(render_markdown(results))
    return md, js
