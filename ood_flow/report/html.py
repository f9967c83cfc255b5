"""The report page: one HTML document with inline CSS, inline SVG and PNG data URIs, and no script.

Every metric cell carries its exact value (``data-value``, the JSON text of ``evaluate --json``) next
to the rounded one it shows, so the page can be checked against the JSON. A Content-Security-Policy
forbids every fetch the page could make (only ``data:`` images and the inline style are allowed).
"""

from __future__ import annotations

import json
import re
from html import escape
from pathlib import Path

from ood_flow import jsontext
from ood_flow.evaluate.metrics import KEYS
from ood_flow.report.figures import unique_ids
from ood_flow.report.style import CSS

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
HEADS = {"auroc": "AUROC", "aupr_in": "AUPR-in", "aupr_out": "AUPR-out"}
CONVENTION = ("In-distribution is the positive class and every score is oriented higher = more in-distribution, "
              "so an AUROC below 0.5 means the model gives the OOD set <em>higher</em> scores than its own data "
              "(the failure Kirichenko et al. 2020 explain). The threshold keeps {tpr} of the in-distribution "
              "group; FPR is the share of an OOD group at or above it.")


def render(data) -> str:
    """The whole page for a :class:`~ood_flow.report.build.ReportData`."""
    body = [_header(data), _metrics(data)]
    body += [_score_section(data, score, figs) for score, figs in data.figures.items()]
    body += [_thumbnails(data), _gates(data), _provenance(data), _footer(data)]
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">\n"
            f"<title>oodflow report: {escape(data.title)}</title>\n<style>{CSS}</style>\n</head>\n"
            f"<body>\n<div class=\"page\">\n{''.join(b for b in body if b)}</div>\n</body>\n</html>\n")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "x"


def _header(data) -> str:
    ev = data.evaluation
    facts = {
        "score file": f"<code>{escape(data.file.name)}</code> "
                      f"<span class=\"note mono\">sha256 {data.file_sha256[:16]}…</span>",
        "in-distribution": f"<code>{escape(ev['in'])}</code> (n = {data.sizes[ev['in']]:,})",
        "OOD": ", ".join(f"<code>{escape(g)}</code> (n = {data.sizes[g]:,})" for g in ev["ood"]),
        "model": "<br>".join(_model_line(m) for m in data.models),
        "made": escape(data.created),
        "command": f"<code>{escape(data.command)}</code>" if data.command else "(not recorded: called from Python)",
        "versions": escape(", ".join(f"{k} {v}" for k, v in data.versions.items())),
    }
    warnings = "".join(f"<p class=\"warning\">warning: {escape(w)}</p>" for w in data.warnings)
    return (f"<header>\n<h1>OOD detection report</h1>\n<p class=\"sub\">{escape(data.title)}</p>\n{warnings}"
            f"<div class=\"top\">\n<dl class=\"facts\">{_dl(facts)}</dl>\n{_toc(data)}</div>\n</header>\n")


def _model_line(m) -> str:
    name = ", ".join(Path(p).name for p in m.paths) or "(not recorded)"
    d = m.description
    detail = (f"{escape(d['model'])}, {d['parameters']:,} parameters, input {'×'.join(map(str, d['input_shape']))}"
              if d else escape(m.note or ""))
    return f"<code>{escape(name)}</code> — {detail}"


def _toc(data) -> str:
    items = ["<li><a href=\"#metrics\">Metrics</a></li>"]
    figs = "".join(f"<li><a href=\"#score-{slug(s)}\"><code>{escape(s)}</code></a></li>" for s in data.figures)
    items.append(f"<li>Histograms, ROC and PR curves<ol>{figs}</ol></li>")
    if data.strips:
        strips = "".join(f"<li><a href=\"#thumbs-{slug(st.group)}\">{escape(st.group)}</a></li>" for st in data.strips)
        items.append(f"<li><a href=\"#thumbnails\">Samples ranked worst and best</a><ol>{strips}</ol></li>")
    if data.gates:
        items.append("<li><a href=\"#gate\">Gate</a></li>")
    items.append("<li><a href=\"#provenance\">Models and groups</a></li>")
    return f"<nav class=\"toc\"><h2>Contents</h2><ol>{''.join(items)}</ol></nav>\n"


def _metrics(data) -> str:
    ev = data.evaluation
    tpr = f"{ev['tpr']:.0%}"
    first = next(iter(ev["by_score"].values()))
    ci = next(iter(first.values())).get("ci")
    ci_note = (f"<p class=\"note\">Below each value: its {ci['level']:.0%} percentile bootstrap interval "
               f"({ci['n_bootstrap']:,} resamples, in- and OOD samples resampled separately, seed {ci['seed']}); "
               "the bar marks the AUROC and its interval against 0.5.</p>" if ci else "")
    head = "".join(f"<th class=\"num\">{h}</th>" for h in ("n", *HEADS.values(), f"FPR@{tpr}TPR", "threshold"))
    rows = "".join(_metric_row(score, g, m) for score, results in ev["by_score"].items() for g, m in results.items())
    return (f"<section id=\"metrics\">\n<h2>Metrics</h2>\n<p class=\"convention\">{CONVENTION.format(tpr=tpr)}</p>\n"
            f"{_summary(ev)}<div class=\"wrap\"><table class=\"metrics\"><thead><tr><th>score</th><th>OOD group</th>"
            f"{head}</tr></thead>\n<tbody>{rows}</tbody></table></div>\n{ci_note}</section>\n")


def _metric_row(score: str, group: str, m: dict) -> str:
    cells = "".join(_metric_cell(m, k) for k in KEYS)
    return (f"<tr data-score=\"{escape(score)}\" data-group=\"{escape(group)}\"><td><code>{escape(score)}</code></td>"
            f"<td>{escape(group)}</td><td class=\"num\">{m['n_ood']:,}</td>{cells}"
            f"<td class=\"num\" data-metric=\"threshold\" data-value=\"{_exact(m['threshold'])}\">"
            f"{m['threshold']:.1f}</td></tr>\n")


def _metric_cell(m: dict, key: str) -> str:
    value, ci = m[key], (m.get("ci") or {}).get(key)
    shown = f"{value:.3f}"
    if key == "auroc":
        shown = f"<span class=\"{'low' if value < 0.5 else 'high'}\">{shown}</span>"
    extra = ""
    if ci:
        extra = (f"<span class=\"ci\" data-lo=\"{_exact(ci[0])}\" data-hi=\"{_exact(ci[1])}\">"
                 f"[{ci[0]:.3f}, {ci[1]:.3f}]</span>")
    if key == "auroc":
        lo, hi = ci if ci else (value, value)
        extra += (f"<span class=\"bar\" aria-hidden=\"true\"><span class=\"mid\"></span><span class=\"span\" "
                  f"style=\"left:{lo * 100:.1f}%;width:{(hi - lo) * 100:.1f}%\"></span>"
                  f"<span class=\"dot\" style=\"left:{value * 100:.1f}%\"></span></span>")
    return f"<td class=\"num\" data-metric=\"{key}\" data-value=\"{_exact(value)}\">{shown}{extra}</td>"


def _summary(ev: dict) -> str:
    """One plain sentence per OOD group for the first score."""
    score, in_group, items = ev["score"], ev["in"], []
    for group, m in ev["ood"].items():
        ci = (m.get("ci") or {}).get("auroc")
        text = f"<b>{escape(group)}</b>: AUROC {m['auroc']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
        if m["auroc"] < 0.5:
            text += (f" — below 0.5: <code>{escape(score)}</code> is higher on {escape(group)} "
                     f"than on {escape(in_group)}")
        if ci and ci[0] <= 0.5 <= ci[1]:
            text += " — the interval includes 0.5: no better than chance at this sample size"
        text += (f"; at the threshold that keeps {m['tpr']:.0%} of {escape(in_group)}, {m['fpr95']:.1%} of "
                 f"{escape(group)} passes as in-distribution.")
        items.append(f"<li>{text}</li>")
    return f"<ul class=\"summary\">{''.join(items)}</ul>\n"


def _score_section(data, score: str, figs: dict[str, str]) -> str:
    s = slug(score)
    caption = {"histogram": f"Densities on shared bins; in-distribution filled, each OOD group outlined; dashed: "
                            f"the threshold at {data.evaluation['tpr']:.0%} TPR.",
               "roc": "ROC, in-distribution positive; dotted: chance.",
               "pr": "Precision-recall, in-distribution positive; dotted: each base rate."}
    parts = "".join(f"<figure class=\"{'wide' if kind == 'histogram' else 'square'}\">{unique_ids(svg, f'{s}-{kind}')}"
                    f"<figcaption>{caption[kind]}</figcaption></figure>" for kind, svg in figs.items())
    return (f"<section id=\"score-{s}\">\n<h2>Scores: <code>{escape(score)}</code></h2>\n"
            f"<div class=\"figs\">{parts}</div>\n</section>\n")


def _thumbnails(data) -> str:
    if not data.strips:
        return ""
    blocks = []
    for strip in data.strips:
        if strip.missing:
            inner = f"<p class=\"missing\">{escape(strip.missing)}</p>"
        else:
            inner = "<div class=\"thumbs\">" + "".join(
                f"<div class=\"thumb\"><img src=\"{t.uri}\" alt=\"sample {escape(t.id)}\">"
                f"<span class=\"score\">{t.score:.1f}</span><span class=\"id\" title=\"{escape(t.id)}\">"
                f"{escape(Path(t.id).name)}</span></div>" for t in strip.thumbs) + "</div>"
        blocks.append(f"<div class=\"strip\" id=\"thumbs-{slug(strip.group)}\"><h3>{escape(strip.caption)}</h3>"
                      f"{inner}</div>")
    return (f"<section id=\"thumbnails\">\n<h2>Samples ranked worst and best</h2>\n<p class=\"note\">Under each "
            f"image: its <code>{escape(data.evaluation['score'])}</code> and its id in the source.</p>\n"
            f"{''.join(blocks)}\n</section>\n")


def _gates(data) -> str:
    if not data.gates:
        return ""
    rows = []
    for g in data.gates:
        decision = g.get("decision")
        if decision:
            verdict = (f"<span class=\"{decision}\">{decision}</span> (more than {g['max_ood_fraction']:.1%} OOD? "
                       f"p = {g['p_value']:.2g}, alpha {g['alpha']:g})")
        elif g.get("rule"):
            verdict = f"gated by the {escape(g['rule'])}"
        else:
            verdict = "no limit recorded"
        rows.append(f"<tr><td>{escape(g['group'])}</td><td><code>{escape(str(g.get('threshold_score', '')))}</code>"
                    f"</td><td class=\"num\">{g.get('threshold', float('nan')):.6g}</td>"
                    f"<td>{escape(str(g.get('threshold_reference', '')))} ({g.get('threshold_tpr', 0):.0%} kept)</td>"
                    f"<td class=\"num\">{g['n_ood']:,} of {g['n']:,}</td><td class=\"num\" data-value=\""
                    f"{_exact(g['ood_fraction'])}\">{g['ood_fraction']:.1%}</td><td>{verdict}</td></tr>")
    return ("<section id=\"gate\">\n<h2>Gate</h2>\n<p class=\"note\">Groups scored with a gate "
            "(<code>oodflow score --max-ood-fraction</code>): a sample is flagged when its score is below the "
            "threshold set on the calibration scores; the decision is the one <code>score</code> stored, a test of "
            "whether more than the limit is OOD (docs/gate.md).</p>\n"
            "<div class=\"wrap\"><table><thead><tr><th>group</th><th>score</th><th class=\"num\">threshold</th>"
            "<th>set on</th><th class=\"num\">OOD</th><th class=\"num\">OOD fraction</th><th>decision</th></tr>"
            f"</thead><tbody>{''.join(rows)}</tbody></table></div>\n</section>\n")


def _provenance(data) -> str:
    models = "".join(_model_block(m) for m in data.models)
    rows = "".join(_group_row(data, g) for g in data.attrs)
    return ("<section id=\"provenance\">\n<h2>Models and groups</h2>\n" + models +
            "<h3>Groups</h3><div class=\"wrap\"><table><thead><tr><th>group</th><th>role</th><th class=\"num\">n"
            "</th><th>source</th><th>method</th><th>seed</th><th>scored</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></div>\n</section>\n")


def _model_block(m) -> str:
    d = m.description or {}
    facts = {"file": "<br>".join(f"<code>{escape(p)}</code>" for p in m.paths) or "(not recorded)",
             "sha256": "<br>".join(f"<span class=\"mono\">{escape(s)}</span>" for s in m.sha256) or "-",
             "groups": escape(", ".join(m.groups))}
    if d:
        best = d.get("best_val_bits_per_dim")
        config = escape(json.dumps(d["config"]))
        facts.update({"architecture": f"{escape(d['model'])} <span class=\"mono\">{config}</span>",
                      "parameters": f"{d['parameters']:,}", "input shape": "×".join(map(str, d["input_shape"])),
                      "training data": escape(str(d.get("training_data") or "-")),
                      "steps": escape(str(d.get("steps") if d.get("steps") is not None else "-")),
                      "best val bits/dim": f"{best:.4f}" if best is not None else "-",
                      "precision": escape(str(d.get("precision"))),
                      "written by": f"oodflow {escape(str(d.get('oodflow_version')))}"})
    else:
        facts["details"] = f"<span class=\"missing\">{escape(m.note or '')}</span>"
    name = Path(m.paths[0]).name if m.paths else "?"
    return f"<h3>Model <code>{escape(name)}</code></h3><dl class=\"facts\">{_dl(facts)}</dl>"


def _group_row(data, group: str) -> str:
    a = data.attrs[group]
    role = "in" if group == data.evaluation["in"] else "OOD"
    method = a.get("method", "-")
    method = ", ".join(method) if isinstance(method, list) else str(method)
    return (f"<tr><td>{escape(group)}</td><td>{role}</td><td class=\"num\">{data.sizes[group]:,}</td>"
            f"<td class=\"mono\">{escape(str(a.get('source', '-')))}</td><td>{escape(method)}</td>"
            f"<td>{escape(str(a.get('seed', '-')))}</td><td>{escape(str(a.get('time', '-')))}</td></tr>")


def _footer(data) -> str:
    return (f"<footer>Made by oodflow {escape(data.versions['oodflow'])} on {escape(data.created)}. Self-contained: "
            "no scripts, fonts or network requests.</footer>\n")


def _dl(facts: dict[str, str]) -> str:
    return "".join(f"<dt>{escape(k)}</dt><dd>{v}</dd>" for k, v in facts.items())


def _exact(value: float) -> str:
    """The value as ``evaluate --json`` prints it (:func:`ood_flow.jsontext.dumps`: ``null`` where not finite)."""
    return escape(jsontext.dumps(value))
