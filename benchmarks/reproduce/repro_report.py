"""Turn the results of benchmarks/reproduce/reproduce.py into reproduction.md (and keep reproduction.json).

The results dict is plain JSON: run metadata (``quick``, ``complete``, ``started``, ``finished``,
``command``, ``environment``, ``budget``) and ``experiments`` keyed by number, each with ``title``,
``config``, ``samples``, ``rows`` (variant, ood, auroc in [0, 1], auroc_ci [lo, hi] (95 % percentile
bootstrap, absent in older results), paper AUROC in % or None, fpr95,
n_in, n_ood, bpd_in, bpd_ood), ``paper``, ``verdict``, ``why``, ``figures`` ([caption, path]),
``commands``, ``wall_s`` and, when it failed, ``error``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ood_flow.fileio import atomic_write

HEADER = ("| variant | OOD set | AUROC ours (%) [95% CI] | AUROC paper (%) | FPR@95 ours (%) "
          "| bits/dim in-dist | bits/dim OOD | n in / OOD |\n|---|---|---|---|---|---|---|---|")


def minutes(seconds: float | None) -> str:
    """``572.3`` -> ``9 min 32 s``."""
    if seconds is None:
        return "—"
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s" if m else f"{s} s"


def _num(x: float | None, fmt: str, scale: float = 1.0) -> str:
    return "—" if x is None else format(scale * x, fmt)


def row_line(row: dict) -> str:
    """One table row; AUROC and FPR in %, the paper's number as given (``—`` when unverified)."""
    cells = [row["variant"], row["ood"], _num(row["auroc"], ".1f", 100) + _interval(row.get("auroc_ci")),
             _num(row.get("paper"), ".1f"),
             _num(row.get("fpr95"), ".1f", 100), _num(row.get("bpd_in"), ".2f"), _num(row.get("bpd_ood"), ".2f"),
             f"{row.get('n_in', '?')} / {row.get('n_ood', '?')}"]
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _interval(ci: list | None) -> str:
    """`` [3.9, 5.2]``: a 95 % bootstrap interval in %, or nothing (results of runs made before --ci)."""
    return "" if not ci else f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def summary(results: dict) -> list[str]:
    lines = ["| # | experiment | wall time | result vs paper |", "|---|---|---|---|"]
    for key, exp in sorted(results["experiments"].items(), key=lambda kv: int(kv[0])):
        verdict = f"**failed**: {exp['error']}" if exp.get("error") else exp.get("verdict", "")
        lines.append(f"| {key} | [{exp['title']}](#{key}) | {minutes(exp.get('wall_s'))} | {verdict} |")
    return lines


def _provenance(exp: dict) -> str:
    """When and at which commit an experiment ran (a report can merge runs made with --only)."""
    parts = [f"finished {exp['run_at']}" if exp.get("run_at") else "", f"git {exp['git']}" if exp.get("git") else ""]
    return f" ({', '.join(p for p in parts if p)})" if any(parts) else ""


def section(key: str, exp: dict) -> list[str]:
    """The markdown of one experiment: settings, table, paper, verdict, why, figures, commands."""
    lines = [f'<a id="{key}"></a>', f"## {key}. {exp['title']}", ""]
    if exp.get("error"):
        lines += [f"**Failed**: {exp['error']}", ""]
    lines += [f"- Configuration: {exp.get('config', '—')}", f"- Samples: {exp.get('samples', '—')}",
              f"- Wall time: {minutes(exp.get('wall_s'))}" + _provenance(exp), ""]
    if exp.get("rows"):
        lines += [HEADER, *map(row_line, exp["rows"]), ""]
    lines += [f"Paper: {exp.get('paper', '—')}.", "", f"Result vs paper: {exp.get('verdict', '—')}", "",
              f"Why we may differ: {exp.get('why', '—')}", ""]
    for caption, path in exp.get("figures", []):
        lines.append(f"![{caption}]({path})")
    if exp.get("commands"):
        lines += ["", "<details><summary>Commands</summary>", "", "```", *exp["commands"], "```", "", "</details>"]
    return lines + [""]


def render_markdown(results: dict) -> str:
    """The whole report as markdown text."""
    env = results.get("environment", {})
    lines = ["# Reproduction at CPU scale: Kirichenko, Izmailov & Wilson (NeurIPS 2020)", ""]
    if results.get("quick"):
        lines += ["> **QUICK RUN** (`--quick`): a smoke test at a tiny budget; the numbers mean nothing.", ""]
    if not results.get("complete"):
        lines += ["> **Incomplete**: the run was still going or stopped early.", ""]
    if "--only" in results.get("command", ""):
        lines += ["> Merged report: the last run re-ran only the experiments named by `--only`; the others are "
                  "kept from earlier runs (each section says when and at which commit it ran).", ""]
    lines += [f"Produced by `{results.get('command', 'python benchmarks/reproduce/reproduce.py')}` (started "
              f"{results.get('started', '?')}, finished {results.get('finished') or '—'}) with oodflow "
              f"{env.get('oodflow', '?')} (git {env.get('git', '?')}), torch {env.get('torch', '?')}, "
              f"{env.get('cpus', '?')} CPU cores shared "
              f"with other work (load average at start {env.get('load_start', '?')}), "
              f"OMP_NUM_THREADS={env.get('omp_num_threads', 'unset')}. Wall time of all experiments "
              f"{minutes(results.get('wall_s'))}.", "",
              "AUROC in %: in-distribution is the positive class and the log-likelihood the score, so 50 is "
              "chance and below 50 means the flow prefers the OOD set (the paper's failure); in brackets its 95% "
              "percentile bootstrap interval (1000 resamples of the in- and OOD samples, seed 0; `oodflow "
              "evaluate --ci 0.95`), which says how much the subset sizes alone move it. FPR@95: share of "
              "the OOD set kept at the threshold that keeps 95% of in-distribution. Bits/dim: mean over the "
              "scored images (not meaningful for the feature flow). Each experiment trains and scores only "
              "through the `oodflow` CLI (commands under each table); Table 1's paper numbers are those quoted "
              "in issue #6, the other experiments' numbers could not be checked against the paper text "
              "available offline, so their paper column gives the paper's claim instead.", "",
              "## Summary", "", *summary(results), ""]
    for key, exp in sorted(results["experiments"].items(), key=lambda kv: int(kv[0])):
        lines += section(key, exp)
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
