"""``oodflow info``: what a model, checkpoint, score file or features file holds."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from ood_flow.cli import common, options

WIDTH = 80  # plain text stays readable in a terminal of 80 columns


def info(
    path: Path = typer.Argument(..., help="A file oodflow wrote: model (.pt/.h5), checkpoint, score or features file."),
    json_out: bool = options.Json,
) -> None:
    """Describe a file oodflow wrote: a model, checkpoint, score or features file.

    A model's architecture, parameter count, input shape, training data and steps, its state (finished, stopped
    early, interrupted at step N of M), best validation bits/dim, training settings, precision, calibration and
    format, and for a feature detector its backbone, weights, transform and standardization; a score file's
    groups (samples, scores, gate, provenance); a features file's backbone and shape. Any other file is an error
    (exit 1).
    """
    from ood_flow.info import describe_file  # h5py: imported when a file is read

    described = describe_file(path)
    if json_out:
        common.print_json(described)
    elif described["kind"] == "scores":
        _print_scores(described)
    else:
        _print_fields(described)


def _print_fields(described: dict) -> None:
    """One ``key: value`` per field, nested dicts as indented lines, long values wrapped at 80 columns."""
    console = common.stdout()
    if "state" in described:  # the sentence says it for people; "status" is its one-word form for --json
        described = {k: v for k, v in described.items() if k != "status"}
    for line in _lines(described):
        console.print(line, highlight=False, markup=False)


def _lines(fields: dict, indent: str = "") -> list[str]:
    lines = []
    for key, value in fields.items():
        label = f"{indent}{key.replace('_', ' ')}:"
        if isinstance(value, dict) and value:
            lines += [label, *_lines(value, indent + "  ")]
            continue
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        elif isinstance(value, float):
            value = f"{value:.6g}"
        text = f"{label} {'-' if value is None else value}"
        if len(text) <= WIDTH or " " not in str(value):  # a hash or path stays on its key's line
            lines.append(text)
        else:
            lines += textwrap.wrap(text, WIDTH, subsequent_indent=indent + "    ", break_long_words=False,
                                   break_on_hyphens=False)
    return lines


def _print_scores(described: dict) -> None:
    table = Table(title=Text(f"{described['file']}: oodflow score file (format {described['format_version']}), "
                  f"{len(described['groups'])} group(s)"), title_justify="left")
    for col in ("group", "n", "scores", "gate", "model", "source"):  # a group's name is folded, never cut: it is
        table.add_column(col, justify="right" if col == "n" else "left",  # what --in and --ood take
                         overflow="fold" if col in ("group", "source") else "ellipsis")
    for g in described["groups"]:
        prov = g["provenance"]
        gate = g.get("gate")
        gate_text = f"{gate['n_ood']} OOD ({gate['ood_fraction']:.1%})" if gate and "n_ood" in gate else "-"
        model = prov.get("model", "-")
        model = ", ".join(Path(m).name for m in model) if isinstance(model, list) else Path(str(model)).name
        cells = (g["name"], str(g["n"]), ", ".join(g["scores"]), gate_text, model, str(prov.get("source", "-")))
        table.add_row(*(Text(c) for c in cells))  # Text: a source like "x [limit 5]" is not rich markup
    common.stdout().print(table)


def register(app: typer.Typer) -> None:
    common.command(app, info)
